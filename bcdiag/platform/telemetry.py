"""Nothing phones home: the switches that keep every library from sending usage data or
checking for updates, set for every process `bcdiag run` starts.

`bcdiag run` puts them in its own environment (its services inherit them) and
`bcdiag.platform.hub.bcdiag_env` hands them to what the hub starts with a clean
environment (the app and MLflow UI services, researchers' servers); ``hub_config/k8s``
sets the same. A value already in the environment wins, so a site can opt in.

Where each is read (versions of requirements.lock):

- ``MLFLOW_DISABLE_TELEMETRY``: ``mlflow/telemetry/utils.py`` ``is_telemetry_disabled``;
  it stops the client's usage events, and the tracking server's ``/ui-telemetry``
  endpoints (``mlflow/server/handlers.py``) then neither fetch the remote UI config
  nor forward the UI's events.
- ``DO_NOT_TRACK``: the cross-tool convention; ``huggingface_hub/constants.py``
  (``HF_HUB_DISABLE_TELEMETRY``) reads it. MLflow accepts only ``true`` there, hence
  its own switch above.
- ``HF_HUB_DISABLE_TELEMETRY``: ``huggingface_hub/constants.py``; no usage pings and no
  library details in the user agent (timm loads weights through huggingface_hub).
- ``HF_HUB_OFFLINE``: ``huggingface_hub/constants.py``; no request to the Hugging Face Hub
  at all. bcdiag builds its networks with ``pretrained=False`` and loads weights from
  MLflow only (`bcdiag.models.architectures`).
- ``PIP_DISABLE_PIP_VERSION_CHECK``: pip's self-update check (``pip/_internal/
  self_outdated_check.py``), in researchers' terminals.
- ``JUPYTER_CONFIG_PATH``: adds ``hub_config/jupyter/`` (`JUPYTER_DIR`), whose
  ``jupyter_server_config.json`` sets JupyterLab's ``LabApp.news_url`` to None (no news
  feed), ``check_for_updates_class`` to ``NeverCheckForUpdate`` (no PyPI query at
  start; ``jupyterlab/handlers/announcements.py``) and ``extension_manager`` to
  ``readonly`` (no PyPI listing).

Pages ask nothing of other hosts either: the clinician app's Voilà page uses the
``bcdiag`` template of ``hub_config/jupyter/voila/templates`` (found through
``JUPYTER_PATH``, `bcdiag.platform.services.app_service`), Voilà's ``lab`` template
without its Font Awesome style sheets from cdn.jsdelivr.net (Voilà bundles Font Awesome).

Looked at and found quiet without a switch: JupyterHub, configurable-http-proxy, Voilà's
server, jupyter_server, ipykernel, papermill, dask/distributed (no bokeh dashboard
installed), torch, timm (beyond huggingface_hub), fastai, FastAPI's OpenTelemetry support
(opt-in). The MLflow UI's own notice and GenAI default: `bcdiag.platform.mlflow_ui`.
"""

from __future__ import annotations

import os
from pathlib import Path

JUPYTER_DIR = Path(__file__).resolve().parents[2] / "hub_config" / "jupyter"

TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def with_jupyter_dir(variable: str) -> str:
    """The search path in `variable` (e.g. ``JUPYTER_PATH``) with `JUPYTER_DIR` first."""
    paths = os.environ.get(variable, "").split(os.pathsep)
    return os.pathsep.join([str(JUPYTER_DIR), *(p for p in paths if p and p != str(JUPYTER_DIR))])


def telemetry_off_env() -> dict[str, str]:
    """The switches, each as this process's environment has it if set, else off; and
    ``JUPYTER_CONFIG_PATH`` with bcdiag's Jupyter settings first."""
    env = {name: os.environ.get(name, value) for name, value in TELEMETRY_OFF.items()}
    env["JUPYTER_CONFIG_PATH"] = with_jupyter_dir("JUPYTER_CONFIG_PATH")
    return env
