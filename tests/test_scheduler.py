"""The retraining scheduler fires real cycles on its cron schedule and never two at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import psutil
import pytest
import yaml
from base_sets import TINY_RECIPE, base_dir_copy
from mlflow import MlflowClient

from bcdiag.cli import main
from bcdiag.cli.models import retrain
from bcdiag.errors import ConfigurationError
from bcdiag.lifecycle.retrain import CycleOutcome, cycle_lock, run_cycle
from bcdiag.lifecycle.scheduler import (
    FAILED,
    RAN,
    REFUSED,
    Scheduler,
    first_start,
)
from bcdiag.models.registry import champion
from bcdiag.platform.services import scheduler_service
from bcdiag.platform.startup import platform_services
from bcdiag.platform.telemetry import TELEMETRY_OFF
from bcdiag.processes import free_port, start, stop
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import upgrade

EVERY_SECOND = "* * * * * *"


@pytest.fixture
def home(bcdiag_home: Path) -> Path:
    """A BCDIAG_HOME with a migrated database (cycles audit into it)."""
    bcdiag_home.mkdir(parents=True)
    upgrade(get_settings().resolved_database_url)
    return bcdiag_home


def _wait_for(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_default_schedule_is_weekly_and_a_bad_one_is_named() -> None:
    scheduler = Scheduler(Settings().retrain_cron)
    first = scheduler.next_fire(datetime(2026, 11, 27, 12, tzinfo=UTC))
    assert first == datetime(2026, 11, 29, 3, tzinfo=UTC)  # Sunday 03:00 UTC
    assert (scheduler.next_fire(first) - first).days == 7
    with pytest.raises(ConfigurationError, match="'every day' is not a cron expression"):
        Scheduler("every day")


def test_scheduler_fires_cycles_and_refuses_one_while_another_runs(
    home: Path, tmp_path: Path
) -> None:
    no_data = tmp_path / "no-data"  # every modality is skipped: a real cycle in milliseconds
    no_data.mkdir()
    scheduler = Scheduler(EVERY_SECOND, lambda: run_cycle(modalities=["US"], data_dir=no_data))
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    with cycle_lock(get_settings()):  # a cycle is running (e.g. `bcdiag retrain --now`)
        thread.start()
        _wait_for(lambda: len(scheduler.history) >= 1)
    _wait_for(lambda: any(f.result == RAN for f in scheduler.history))
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    results = [f.result for f in scheduler.history]
    assert results[0] == REFUSED and FAILED not in results
    assert "already running" in scheduler.history[0].detail
    ran = next(f for f in scheduler.history if f.result == RAN)
    (outcome,) = ran.outcomes
    assert outcome["model"] == "bcdiag-us" and outcome["decision"] == "skipped"
    assert "base data set busi256 is missing" in outcome["reason"]
    status = scheduler.status()
    assert status["cron"] == EVERY_SECOND and len(status["firings"]) == len(results)


def test_status_names_the_cycle_under_way() -> None:
    release = threading.Event()

    def cycle() -> list[CycleOutcome]:
        release.wait(30)
        return []

    scheduler = Scheduler(EVERY_SECOND, cycle)
    assert scheduler.status()["running_since"] is None
    firing = threading.Thread(target=scheduler.fire)
    firing.start()
    _wait_for(lambda: scheduler.status()["running_since"] is not None)
    since = scheduler.status()["running_since"]
    release.set()
    firing.join(timeout=10)
    status = scheduler.status()
    assert status["running_since"] is None
    assert [(f["at"], f["result"]) for f in status["firings"]] == [(since, RAN)]


@pytest.fixture
def scheduler_process(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The scheduler started as `make run` starts it, firing every second, without data."""
    monkeypatch.setenv("BCDIAG_RETRAIN_CRON", EVERY_SECOND)
    monkeypatch.setenv("BCDIAG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BCDIAG_RETRAIN_MODALITIES", '["US", "MG"]')
    service = scheduler_service(Settings(scheduler_port=free_port()))
    process = start(service, timeout_s=60)  # returns once /health answers
    try:
        yield process, service.health_url
    finally:
        stop([process])


def _status(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return dict(json.load(response))
    except OSError:
        return {}


def test_scheduler_process_reports_firings_and_refuses_a_concurrent_now(
    scheduler_process: tuple[subprocess.Popen[bytes], str], home: Path
) -> None:
    process, url = scheduler_process
    _wait_for(lambda: any(f["result"] == RAN for f in _status(url).get("firings", [])), 60)
    firing = next(f for f in _status(url)["firings"] if f["result"] == RAN)
    assert [o["model"] for o in firing["outcomes"]] == ["bcdiag-us", "bcdiag-mg"]
    assert {o["decision"] for o in firing["outcomes"]} == {"skipped"}

    with cycle_lock(get_settings()):  # a long cycle in progress
        now = subprocess.run(
            [sys.executable, "-m", "bcdiag", "retrain", "--now", "--json"],
            env={**os.environ, "BCDIAG_DATA_DIR": str(home)},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        seen = len(_status(url)["firings"])
        _wait_for(lambda: len(_status(url)["firings"]) > seen + 1)
        refused = _status(url)["firings"][-1]
    assert now.returncode == 1 and now.stdout == ""
    assert "a retraining cycle is already running" in now.stderr
    assert refused["result"] == REFUSED

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


@pytest.mark.slow
def test_scheduler_stops_within_10_s_of_sigterm_during_a_cycle(
    home: Path, mlflow_tracking: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first-start cycle trains in the notebook's kernel; SIGTERM ends both promptly."""
    monkeypatch.setenv("BCDIAG_DATA_DIR", str(data_dir))
    monkeypatch.setenv("BCDIAG_RETRAIN_MODALITIES", '["US"]')
    monkeypatch.setenv("BCDIAG_RETRAIN_RECIPE", '{"epochs": 200, "members": 1}')  # ~minutes
    process = start(scheduler_service(Settings(scheduler_port=free_port())), timeout_s=60)
    try:
        scheduler = psutil.Process(process.pid)

        def kernel() -> list[psutil.Process]:
            below = scheduler.children(recursive=True)
            return [p for p in below if "ipykernel_launcher" in " ".join(p.cmdline())]

        _wait_for(kernel, timeout_s=180)  # the cycle's notebook runs
        time.sleep(5)  # into training
        below = scheduler.children(recursive=True)
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        print(f"stopped {time.monotonic() - asked:.1f} s after SIGTERM")
        _, alive = psutil.wait_procs(below, timeout=1)
        assert not alive, f"left running: {alive}"
    finally:
        stop([process])


def test_make_run_starts_the_scheduler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(home=tmp_path, scheduler_port=8899, mlflow_port=5999)
    service = scheduler_service(settings)
    assert service.argv[1:] == ["-m", "bcdiag", "retrain", "--schedule"]
    assert service.health_url == "http://127.0.0.1:8899/health"
    assert service.env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"
    assert service.env["BCDIAG_HOME"] == str(tmp_path)
    assert service in platform_services(settings)


def test_the_kubernetes_cronjob_matches_the_settings_and_the_cli() -> None:
    manifest = Path(__file__).parents[1] / "hub_config" / "k8s" / "retrain-cronjob.yaml"
    spec = yaml.safe_load(manifest.read_text())["spec"]
    assert spec["schedule"] == Settings().retrain_cron and spec["concurrencyPolicy"] == "Forbid"
    (container,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    program, command, *args = container["command"]
    assert (program, main.get_command(click.Context(main), command)) == ("bcdiag", retrain)
    assert retrain.make_context(command, args).params["now"] is True
    fields = set(Settings.model_fields)
    for variable in (e["name"] for e in container["env"]):
        known = variable == "MLFLOW_TRACKING_URI" or variable in TELEMETRY_OFF
        assert known or variable.lower()[7:] in fields, variable


@pytest.mark.slow
def test_first_start_trains_a_champion_for_each_modality_without_one(
    home: Path,
    mlflow_tracking: str,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both base recipes, tiny (64 px, 2 epochs): all of busi256, 40 rsna640 patients."""
    base = base_dir_copy(data_dir, tmp_path / "data", ["busi256"], per_split_and_class=None)
    base_dir_copy(data_dir, base, ["rsna640"], per_split_and_class=10)
    monkeypatch.setenv("BCDIAG_DATA_DIR", str(base))
    monkeypatch.setenv("BCDIAG_RETRAIN_MODALITIES", '["US", "MG"]')
    monkeypatch.setenv("BCDIAG_RETRAIN_RECIPE", json.dumps(TINY_RECIPE))
    get_settings.cache_clear()
    settings = get_settings()
    scheduler = Scheduler(settings.retrain_cron)

    firing = first_start(settings, scheduler)

    assert firing is not None and firing.result == RAN, firing
    us, mg = firing.outcomes
    assert (us["model"], us["decision"], us["champion_version"]) == (
        "bcdiag-us", "promoted", None
    )  # fmt: skip
    assert us["reason"].startswith("no champion yet")
    current = champion("bcdiag-us")
    assert current is not None and current.version == us["challenger_version"]
    # 20 locked MG images cannot show a tiny model above chance: trained, registered, gated
    assert (mg["model"], mg["challenger_version"]) == ("bcdiag-mg", "1")
    assert mg["reason"].startswith("no champion yet"), mg
    for outcome, dataset in ((us, "busi256"), (mg, "rsna640")):
        params = MlflowClient().get_run(outcome["run_id"]).data.params
        assert (params["dataset"], params["architecture"], params["image_size"]) == (
            dataset, "efficientnet_lite0", "64"
        )  # the base recipe, with the BCDIAG_RETRAIN_RECIPE values  # fmt: skip
    assert [f.result for f in scheduler.history] == [RAN]


def test_base_data_is_the_configured_folder_if_it_exists_else_home_data(tmp_path: Path) -> None:
    home, shared = tmp_path / "home", tmp_path / "shared-data"
    assert Settings(home=home, data_dir=shared).base_data_dir == home / "data"  # `make run`
    assert Settings(home=home, data_dir=None).base_data_dir == home / "data"  # elsewhere
    shared.mkdir()
    assert Settings(home=home, data_dir=shared).base_data_dir == shared
