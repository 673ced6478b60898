"""Library progress output never reaches a clinician's page.

A Voilà kernel's stderr is shown on the page (issue 12: "Downloading artifacts:
100% 1/1" appeared after a reload, from the champions loading). The app's kernels
run with the environment `app_service` gives them; in it, the same download that
prints a progress bar elsewhere prints nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
from mlflow_server import MlflowServer

from bcdiag.platform.services import app_service
from bcdiag.settings import Settings

DOWNLOAD = """
import mlflow
mlflow.artifacts.download_artifacts(artifact_uri={uri!r}, dst_path={folder!r})
"""


def _stderr_of_download(uri: str, folder: Path, extra_env: dict[str, str]) -> str:
    env = {key: value for key, value in os.environ.items() if key not in extra_env}
    code = DOWNLOAD.format(uri=uri, folder=str(folder))
    done = subprocess.run(
        [sys.executable, "-c", code], env={**env, **extra_env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_the_app_kernels_download_models_without_progress_bars(
    mlflow_server: MlflowServer, mlflow_tracking: str, tmp_path: Path
) -> None:
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "bundle/bundle.pt")
    uri = f"runs:/{run.info.run_id}/bundle"
    app_env = app_service(Settings(home=tmp_path, mlflow_tracking_uri=mlflow_server.url)).env
    quiet = {key: app_env[key] for key in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "TQDM_DISABLE")}

    elsewhere = _stderr_of_download(uri, tmp_path / "a", {})
    in_the_app = _stderr_of_download(uri, tmp_path / "b", quiet)
    assert "Downloading artifacts" in elsewhere  # what leaked onto the page
    assert "Downloading artifacts" not in in_the_app and "%|" not in in_the_app
