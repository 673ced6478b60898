"""`bcdiag benchmark quality|crossval --json` print exactly one JSON object (tiny settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _json_run(*args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "bcdiag", "benchmark", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "progress bars must not reach stdout"
    parsed: dict[str, object] = json.loads(lines[0])
    return parsed


@pytest.mark.slow
def test_quality_json_has_the_contract_fields(data_dir: Path) -> None:
    summary = _json_run(
        "quality", "--seeds", "2", "--epochs", "1", "--members", "1", "--data-dir", str(data_dir)
    )
    for key in ("auc_mean", "auc_sd", "acc_mean", "acc_sd", "seeds", "seconds"):
        assert key in summary
    assert summary["seeds"] == 2
    aucs = [seed["auc"] for seed in summary["per_seed"]]  # type: ignore[attr-defined]
    assert summary["auc_mean"] == pytest.approx(sum(aucs) / 2)
    assert all(0.0 <= a <= 1.0 for a in aucs)
    argmax = [seed["acc_argmax"] for seed in summary["per_seed"]]  # type: ignore[attr-defined]
    assert summary["acc_argmax_mean"] == pytest.approx(sum(argmax) / 2)
    assert all(abs(a * 156 - round(a * 156)) < 1e-9 for a in argmax)  # counts of the 156 tests
    thresholds = [seed["threshold"] for seed in summary["per_seed"]]  # type: ignore[attr-defined]
    assert all(0.0 < t < 1.0 for t in thresholds)  # each seed's own, chosen on validation


@pytest.mark.slow
def test_crossval_json_pools_every_mammogram(data_dir: Path) -> None:
    summary = _json_run(
        "crossval", "--dataset", "mias", "--folds", "3", "--epochs", "1", "--members", "1",
        "--image-size", "32", "--data-dir", str(data_dir),
    )  # fmt: skip
    assert summary["pooled_n"] == 322 and summary["pooled_n_positive"] == 52
    assert 0.0 <= float(summary["pooled_auc_low"]) <= float(summary["pooled_auc_high"]) <= 1.0  # type: ignore[arg-type]
