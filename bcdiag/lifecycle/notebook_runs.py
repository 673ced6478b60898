"""Running bcdiag's parameterised notebooks with papermill, each as one MLflow run.

The run is created before the notebook starts so that the executed notebook —
including a failed one — is attached to it as an artifact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import papermill
from mlflow.tracking import MlflowClient

from bcdiag.errors import BcdiagError
from bcdiag.settings import get_settings


def run_notebook(name: str, parameters: dict[str, Any], *, experiment: str, run_name: str) -> str:
    """Execute ``notebooks/<name>.ipynb`` with `parameters` in a new MLflow run.

    Returns:
        The MLflow run id; the executed notebook is its artifact ``notebooks/<name>.ipynb``.

    Raises:
        BcdiagError: the notebook failed (the run is marked FAILED, the notebook kept).
    """
    settings = get_settings()
    source = settings.notebooks_dir / f"{name}.ipynb"
    if not source.exists():
        raise BcdiagError(f"notebook {source} does not exist")
    tracking_uri = settings.resolved_tracking_uri
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # the notebook's kernel inherits it
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = MlflowClient()
    run_id: str = client.create_run(experiment_id, run_name=run_name).info.run_id
    with tempfile.TemporaryDirectory() as folder:
        executed = Path(folder) / f"{name}.ipynb"
        try:
            papermill.execute_notebook(
                str(source),
                str(executed),
                parameters={**parameters, "run_id": run_id, "experiment": experiment},
                kernel_name="python3",
                cwd=str(settings.notebooks_dir),
                progress_bar=True,
            )
        except papermill.PapermillExecutionError as error:
            client.set_terminated(run_id, "FAILED")
            raise BcdiagError(
                f"notebook {name} failed in cell {error.exec_count}: {error.ename}: {error.evalue} "
                f"(MLflow run {run_id} has the executed notebook)"
            ) from error
        finally:
            if executed.exists():
                client.log_artifact(run_id, str(executed), "notebooks")
    return run_id
