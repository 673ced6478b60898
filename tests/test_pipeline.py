"""Training, evaluation and promotion end to end: papermill notebooks against a real
MLflow server, driven through the `bcdiag` command line as users and the scheduler do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow_server import MlflowServer
from own_folder import mammogram_folder
from sqlalchemy import select

from bcdiag.settings import get_settings
from bcdiag.storage import Storage, upgrade
from bcdiag.storage.models import AuditEvent


def _bcdiag(server: MlflowServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url}
    return subprocess.run(
        [sys.executable, "-m", "bcdiag", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_train_evaluate_promote_through_the_cli(
    mlflow_server: MlflowServer, mlflow_tracking: str, data_dir: Path, bcdiag_home: Path
) -> None:
    bcdiag_home.mkdir(parents=True)
    upgrade(get_settings().resolved_database_url)  # promote audits its decision
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment(mlflow_tracking).name

    trained = _bcdiag(
        mlflow_server, "train", "--dataset", "busi256", "--image-size", "64", "--epochs", "2",
        "--experiment", experiment, "--data-dir", str(data_dir), "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Traceback" not in trained.stdout
    run_id = json.loads(trained.stdout.strip().splitlines()[-1])["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["dataset"] == "busi256"
    assert [m.step for m in client.get_metric_history(run_id, "valid_loss")] == [0, 1]
    for key in ("valid_auc", "valid_auc_low", "test_auc", "test_accuracy", "test_dedup_auc"):
        assert 0.0 <= run.data.metrics[key] <= 1.0
    # 98 test images minus the 6 that repeat a training frame (pHash or pixels)
    assert run.data.metrics["test_dedup_n"] == 92
    artifacts = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert artifacts >= {
        "plots/roc.png", "plots/confusion_test.png",
        "plots/calibration_test.png", "plots/training_curves.png",
    }  # fmt: skip
    assert [a.path for a in client.list_artifacts(run_id, "notebooks")] == ["notebooks/train.ipynb"]
    version = client.get_model_version("bcdiag-us", "1")
    assert version.run_id == run_id and len(version.tags["bundle_sha256"]) == 64
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/model_card.md")
    assert version.description == card  # the registry shows the card of each version
    test_auc = run.data.metrics["test_auc"]
    assert "**Not a medical device.**" in card and f"| test | 98 | {test_auc:.3f} (" in card
    assert "| train | 464 | 125 | 26.9% |" in card  # data, split and prevalence

    promoted = _bcdiag(
        mlflow_server, "promote", "bcdiag-us", "1", "--data-dir", str(data_dir), "--json"
    )
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    decision = json.loads(promoted.stdout)
    assert decision["promoted"] is True and decision["decision"] == "promoted"
    assert "AUC" in decision["reason"]  # the locked-test gate judged it, not a shortcut
    assert client.get_model_version_by_alias("bcdiag-us", "champion").version == "1"
    assert client.get_run(run_id).data.tags["gate_decision"] == "promoted"
    with Storage.from_settings() as storage, storage.sessions() as session:
        actions = list(session.scalars(select(AuditEvent.action)))
    assert "model.promoted" in actions
    again = _bcdiag(mlflow_server, "promote", "bcdiag-us", "1", "--data-dir", str(data_dir))
    assert again.returncode == 1 and "already the champion" in again.stderr

    evaluated = _bcdiag(
        mlflow_server, "evaluate", "--version", "champion",
        "--experiment", experiment, "--data-dir", str(data_dir),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    runs = client.search_runs([mlflow_tracking], "params.model_version = '1'")
    assert len(runs) == 1
    assert runs[0].data.metrics["test_auc"] == pytest.approx(run.data.metrics["test_auc"])


@pytest.mark.slow
def test_train_on_a_folder_of_own_mammograms_registers_bcdiag_mg(
    mlflow_server: MlflowServer, mlflow_tracking: str, data_dir: Path, tmp_path: Path
) -> None:
    own = mammogram_folder(data_dir, tmp_path / "own-films")
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment(mlflow_tracking).name
    trained = _bcdiag(
        mlflow_server, "train", "--dataset", "folder", "--data-dir", str(own),
        "--image-size", "32", "--epochs", "1", "--members", "1",
        "--experiment", experiment, "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = json.loads(trained.stdout.strip().splitlines()[-1])["run_id"]
    params = client.get_run(run_id).data.params
    assert (params["dataset"], params["image_size"]) == ("folder", "32")
    assert (params["n_train"], params["n_valid"], params["n_test"]) == ("8", "6", "6")
    assert client.get_model_version("bcdiag-mg", "1").run_id == run_id  # mammograms: the MG model


def test_failed_notebook_marks_the_run_failed_and_keeps_the_notebook(
    mlflow_server: MlflowServer, mlflow_tracking: str, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment(mlflow_tracking).name
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = _bcdiag(
        mlflow_server, "train", "--epochs", "1", "--members", "1",
        "--experiment", experiment, "--data-dir", str(empty),
    )  # fmt: skip
    assert result.returncode == 1
    assert "breastmnist.npz is missing" in result.stderr
    assert "Traceback" not in result.stderr
    (run,) = client.search_runs([mlflow_tracking])
    assert run.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notebooks")] == [
        "notebooks/train.ipynb"
    ]


@pytest.mark.slow
def test_train_data_parallel_logs_epochs_from_rank_zero(
    mlflow_server: MlflowServer, mlflow_tracking: str, data_dir: Path
) -> None:
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment(mlflow_tracking).name
    trained = _bcdiag(
        mlflow_server, "train", "--epochs", "2", "--members", "1", "--processes", "2",
        "--no-register", "--experiment", experiment, "--data-dir", str(data_dir), "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = client.get_run(json.loads(trained.stdout.strip().splitlines()[-1])["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["processes"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_loss")] == [0, 1]
    assert 0.0 <= run.data.metrics["test_auc"] <= 1.0
    assert not client.search_registered_models()
