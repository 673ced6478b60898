"""Fixtures for tests that talk to MLflow (imported by ``tests/conftest.py``).

- ``mlflow_server``: a real ``mlflow server`` process for the session on a free
  127.0.0.1 port (SQLite backend store, proxied local artifact store under a
  session temp folder, job runner off); yields an `MlflowServer` (URL, artifact folder).
- ``mlflow_tracking``: per test, ``MLFLOW_TRACKING_URI`` (environment and
  ``mlflow.set_tracking_uri``) pointing at that server, a new experiment, and an
  empty model registry (every registered model is deleted before and after).
- ``breastmnist``: BreastMNIST 28 px from ``BCDIAG_DATA_DIR``, loaded once.
- ``small_bundle``: a one-member, one-epoch `ModelBundle` trained on it (~3 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from bcdiag.bundle import ModelBundle
from bcdiag.datasets import ImageSet
from bcdiag.datasets.breastmnist import load
from bcdiag.services import free_port
from bcdiag.train import TrainConfig, train_bundle

SERVER_START_TIMEOUT_S = 60


@dataclass(frozen=True)
class MlflowServer:
    """A running test server: its base URL and where it stores artifacts."""

    url: str
    artifacts: Path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A running MLflow tracking server."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.sqlite'}"),
        *("--artifacts-destination", str(root / "artifacts"), "--workers", "1"),
    ]
    # MLflow 3's job runner (GenAI scoring, trace archival) forks ~10 busy processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = root / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, log)
        yield MlflowServer(url, root / "artifacts")
    finally:
        process.terminate()
        process.wait(timeout=20)


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited: {log.read_text()}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).close()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(
        f"mlflow server did not answer within {SERVER_START_TIMEOUT_S} s: {log.read_text()}"
    )


def _delete_registered_models(client: MlflowClient) -> None:
    for model in client.search_registered_models():
        client.delete_registered_model(model.name)


@pytest.fixture
def mlflow_tracking(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tracking on the session server with a fresh experiment; yields the experiment id."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    client = MlflowClient(mlflow_server.url)
    _delete_registered_models(client)
    experiment = mlflow.set_experiment(f"test-{uuid.uuid4().hex[:12]}")
    try:
        yield experiment.experiment_id
    finally:
        mlflow.end_run()
        _delete_registered_models(client)
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None restores the default


@pytest.fixture(scope="session")
def breastmnist(data_dir: Path) -> ImageSet:
    """BreastMNIST 28 px through the inference path."""
    return load(data_dir)


@pytest.fixture(scope="session")
def small_bundle(breastmnist: ImageSet) -> ModelBundle:
    """A quickly trained real bundle (one member, one epoch)."""
    return train_bundle(breastmnist, TrainConfig(epochs=1, members=1))
