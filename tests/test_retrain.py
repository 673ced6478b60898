"""Retraining cycles end to end: papermill notebook, real MLflow server, real storage.

The US base set (busi256, all of it) at a tiny size (64 px, one member, two epochs).
So that no assertion rests on a lucky training outcome, each gate decision is between
models whose quality is set by construction, not by how one short training run went: a
champion whose scores are constant (its final layer zeroed: AUC exactly 0.5, and at
threshold 0.999 it flags nothing) loses to a challenger trained on the real labels, and
a challenger trained on inverted labels (anti-informative: AUC far below 0.5 on the
untouched locked test set) loses to that champion. ``pytest --train-seed 0,1,2,3,4``
runs the cycle test once per recipe seed (given through ``BCDIAG_RETRAIN_RECIPE``, which
the notebook kernel and the CLI processes inherit); CI runs seed 0.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from base_sets import TINY_RECIPE, base_dir_copy
from mlflow import MlflowClient
from own_folder import mammogram_folder
from sqlalchemy import select
from test_inference import breastmnist_png

from bcdiag.app.analyses import AnalysisAccepted, analyse_upload
from bcdiag.lifecycle.retrain import FAILED, run_cycle
from bcdiag.models.bundle import ModelBundle, OperatingPointSpec
from bcdiag.models.registry import CHAMPION, PREVIOUS_CHAMPION, log_bundle, set_champion
from bcdiag.serving.inference import Predictor
from bcdiag.serving.local import LocalScorer
from bcdiag.settings import get_settings
from bcdiag.storage import Storage, upgrade
from bcdiag.storage.models import AuditEvent

TINY = ("--epochs", "2", "--members", "1")


@pytest.fixture
def home_storage(bcdiag_home: Path, mlflow_tracking: str) -> Iterator[Storage]:
    """Storage in a fresh BCDIAG_HOME, which notebook kernels and CLI processes inherit."""
    bcdiag_home.mkdir(parents=True)
    upgrade(get_settings().resolved_database_url)
    with Storage.from_settings() as storage:
        yield storage


def _bcdiag(*args: str, hub_user: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; `hub_user` as in a researcher's or admin's JupyterLab terminal."""
    env = dict(os.environ) | ({"JUPYTERHUB_USER": hub_user} if hub_user else {})
    return subprocess.run(
        [sys.executable, "-m", "bcdiag", *args],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip


def _analyse(storage: Storage, predictor: Predictor, data_dir: Path, index: int) -> str:
    """Upload a BreastMNIST training image; the version of the model that analysed it."""
    png = breastmnist_png(data_dir, index, "train")
    scorer = LocalScorer(predictor)
    outcome = analyse_upload(
        storage, scorer, png, f"{index}.png", user="dr-a", modality="US", case_name="Case A"
    )
    assert isinstance(outcome, AnalysisAccepted)
    return outcome.analysis.model_version


def _constant(bundle: ModelBundle) -> ModelBundle:
    """`bundle` (bcnet) with its final layer zeroed: every image scores 0.5, so its AUC is
    exactly 0.5 on any data, and at threshold 0.999 it flags nothing."""
    final = ("head.3.weight", "head.3.bias")  # BcNet's last Linear
    members = [
        {k: torch.zeros_like(v) if k in final else v for k, v in member.items()}
        for member in bundle.members
    ]
    point = OperatingPointSpec(threshold=0.999, sensitivity=0.0, specificity=1.0, rule="fixed")
    return dataclasses.replace(bundle, members=members, temperature=1.0, operating_point=point)


def _audit(storage: Storage) -> list[tuple[str, str, str]]:
    """The audit trail of the models (uploads, analyses and feedback left out)."""
    with storage.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        return [
            (e.user, e.action, e.target)
            for e in events
            if e.action.startswith(("model.", "retrain."))
        ]


def _aliases() -> dict[str, str]:
    return dict(MlflowClient().get_registered_model("bcdiag-us").aliases)


@pytest.mark.slow
def test_feedback_challenger_gate_rejection_and_rollback(
    home_storage: Storage,
    small_bundle: ModelBundle,
    data_dir: Path,
    tmp_path: Path,
    train_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = home_storage
    tiny = {**TINY_RECIPE, "seed": train_seed}
    monkeypatch.setenv("BCDIAG_RETRAIN_RECIPE", json.dumps(tiny))  # kernels inherit it
    get_settings.cache_clear()
    with mlflow.start_run():
        log_bundle(_constant(small_bundle))
    forced = _bcdiag("promote", "--force", "bcdiag-us", "1", "--json", hub_user="admin-ann")
    assert forced.returncode == 0, forced.stderr[-2000:]
    seconds = [0.0]  # the app's clock: it rechecks the champion alias every 30 s
    predictor = Predictor(champion_check_s=30.0, clock=lambda: seconds[0])
    versions = [_analyse(storage, predictor, data_dir, i) for i in (1, 4, 5)]
    for analysis in storage.list_analyses("dr-a"):
        outcome = "biopsy-malignant" if analysis.filename == "4.png" else "biopsy-benign"
        storage.record_feedback(analysis.id, "dr-a", outcome)

    # Feedback in → challenger registered → gate → champion moved.
    cycle = _bcdiag("retrain", "--now", "--modality", "US", *TINY, "--json")
    assert cycle.returncode == 0, cycle.stderr[-3000:]
    (line,) = cycle.stdout.strip().splitlines()
    result = json.loads(line)
    assert {k: result[k] for k in ("model", "challenger_version", "champion_version")} == {
        "model": "bcdiag-us", "challenger_version": "2", "champion_version": "1",
    }  # fmt: skip
    assert result["decision"] == "promoted", result["reason"]
    assert result["reason"].startswith("non-inferior: AUC")
    champion_figures = ("champion_auc_low", "champion_auc_high", "champion_sensitivity")
    assert [result[k] for k in champion_figures] == [0.5, 0.5, 0.0]
    assert result["champion_specificity"] == 1.0
    assert result["challenger_auc_low"] > 0.5  # the real labels rank better than chance
    assert _aliases() == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    run = MlflowClient().get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["gate_decision"] == "promoted"
    params = run.data.params
    assert (params["confirmed_used"], params["n_train"], params["n_test_locked"]) == (
        "3", "467", "98",
    )  # fmt: skip
    assert params["seed"] == str(train_seed)
    artifacts = {a.path for a in MlflowClient().list_artifacts(result["run_id"])}
    assert {"gate.json", "notebooks"} <= artifacts
    seconds[0] += 31
    versions.append(_analyse(storage, predictor, data_dir, 6))  # the new champion, no restart

    # A challenger trained on inverted labels is rejected; the champion stays.
    inverted = base_dir_copy(
        data_dir, tmp_path / "inverted", ["busi256"], per_split_and_class=None, invert_labels=True
    )
    (rejected,) = run_cycle(
        modalities=["US"], data_dir=inverted, overrides={"epochs": 2, "members": 1}, user="t"
    )
    assert (rejected.decision, rejected.challenger_version) == ("rejected", "3"), rejected.reason
    gate = rejected.gate
    assert gate is not None and gate.champion is not None and gate.difference is not None
    assert gate.challenger.auc.high < 0.5 < gate.champion.auc.low, rejected.reason
    assert gate.difference.high < -gate.margins.auc, rejected.reason
    assert _aliases() == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}

    # Rollback restores the previous champion; every analysis keeps its own version.
    rolled = _bcdiag("rollback", "bcdiag-us", "--json")
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    assert json.loads(rolled.stdout) == {"model": "bcdiag-us", "champion": "1", "withdrawn": "2"}
    assert _aliases() == {CHAMPION: "1"}
    seconds[0] += 31
    versions.append(_analyse(storage, predictor, data_dir, 7))
    assert versions == ["1", "1", "1", "2", "1"]
    stored = [a.model_version for a in reversed(storage.list_analyses("dr-a"))]
    assert stored == versions

    me = getpass.getuser()
    assert _audit(storage) == [
        ("admin-ann", "model.promoted-forced", "model:bcdiag-us/1"),  # the hub user
        (me, "model.promoted", "model:bcdiag-us/2"),
        ("t", "model.rejected", "model:bcdiag-us/3"),
        (me, "model.rolled-back", "model:bcdiag-us/1"),
    ]


def test_a_cycle_trains_and_locks_on_a_site_folder_of_mammograms(
    home_storage: Storage, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = mammogram_folder(data_dir, tmp_path / "site-films")
    monkeypatch.setenv("BCDIAG_BASE_FOLDER_MG", str(own))  # the notebook kernel inherits it
    get_settings.cache_clear()
    (outcome,) = run_cycle(
        modalities=["MG"], data_dir=tmp_path / "no-public-data",
        overrides={"epochs": 1, "members": 1, "image_size": 32}, user="t",
    )  # fmt: skip
    assert (outcome.model, outcome.challenger_version) == ("bcdiag-mg", "1"), outcome.reason
    assert outcome.reason.startswith("no champion yet")  # judged on the folder's test rows
    params = MlflowClient().get_run(outcome.run_id).data.params
    assert params["dataset"] == "folder"
    assert (params["n_train"], params["n_valid"], params["n_test_locked"]) == ("8", "6", "6")


def test_a_failed_cycle_is_visible_and_leaves_the_champion(
    home_storage: Storage, small_bundle: ModelBundle, tmp_path: Path
) -> None:
    with mlflow.start_run():
        log_bundle(small_bundle)
    set_champion("bcdiag-us", "1")
    broken = tmp_path / "broken"
    (broken / "busi256").mkdir(parents=True)
    (broken / "busi256" / "labels.csv").write_text("file,label,split\nmissing.png,benign,train\n")
    (outcome,) = run_cycle(modalities=["US"], data_dir=broken, overrides={"epochs": 1})
    assert outcome.decision == FAILED and outcome.champion_version == "1"
    assert "notebook retrain failed" in outcome.reason
    assert _aliases() == {CHAMPION: "1"}
    (run,) = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("bcdiag-retrain").experiment_id],
        "attributes.status = 'FAILED'",
        max_results=1,
    )
    assert run.info.run_id in outcome.reason
    assert _audit(home_storage) == [("scheduler", "retrain.failed", "model:bcdiag-us")]
