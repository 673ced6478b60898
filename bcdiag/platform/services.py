"""Servers `make run` starts: MLflow, the inference service and the clinician app (which
the hub runs as its services) and the retraining scheduler; `bcdiag.platform.startup`
lists them all."""

from __future__ import annotations

import sys
from pathlib import Path

from bcdiag.errors import ConfigurationError
from bcdiag.platform.secret_files import private_json, secret_file
from bcdiag.platform.telemetry import with_jupyter_dir
from bcdiag.processes import Service
from bcdiag.serving.client import HEALTH_PATH, SCORING_TOKEN_ENV
from bcdiag.settings import Settings


def mlflow_service(settings: Settings, port: int | str | None = None) -> Service:
    """MLflow tracking server + model registry: SQLite backend, local artifacts.

    `port` defaults to `Settings.mlflow_port`; the hub's MLflow UI service passes a
    placeholder to run a second, UI-only server on the same stores.
    """
    store = settings.home / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    port = settings.mlflow_port if port is None else port
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--backend-store-uri", f"sqlite:///{(store / 'mlflow.sqlite').resolve()}",
        "--artifacts-destination", str((store / "artifacts").resolve()),
        "--workers", "1",
        "--uvicorn-opts", "--log-level warning",
    ]  # fmt: skip
    # MLflow 3.17's server starts ~10 job-runner processes by default; bcdiag uses no
    # server-side jobs, and on 2 cores they slowed training ~25x.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return Service("mlflow", argv, f"{url}/health", url, env)


MAX_UPLOAD_BYTES = 200 * 2**20
PROXIED_TOKEN_ENV = "BCDIAG_PROXIED_TOKEN"  # what the hub-OAuth proxy sends on (proxy.py)


def app_token(settings: Settings) -> str:
    """The token Voilà asks of every request behind the hub: only the hub-OAuth proxy,
    which adds it, gets through, so no other local account reaches the app's port."""
    return secret_file(settings.home / "hub" / "app-token")


def app_token_config(settings: Settings, token: str) -> Path:
    """A folder holding ``voila.json`` with `token` (0600; the token never appears on a
    command line, which every account can read)."""
    folder = settings.home / "hub" / "voila"
    private_json(folder / "voila.json", {"Voila": {"token": token}})
    return folder


APP_HEALTH_PATH = "/voila/templates/lab/static/labvariables.css"


def scoring_token(settings: Settings) -> str:
    """The token the app and the inference service share (0600 in the hub's state)."""
    return secret_file(settings.home / "hub" / "scoring-token")


def scoring_service(settings: Settings) -> Service:
    """The inference service (`bcdiag.serving.service`): Ray Serve on 127.0.0.1.

    Its health URL answers once a replica is up, with the champions it holds.
    """
    url = f"http://127.0.0.1:{settings.scoring_port}"
    token = scoring_token(settings)
    env = {
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "BCDIAG_HOME": str(settings.home),
        "BCDIAG_SCORING_PORT": str(settings.scoring_port),
        SCORING_TOKEN_ENV: token,
        # Ray's control plane (GCS, raylet) asks every client for the same token.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        # Ray's C++ failure handler aborts a process still shutting down 3 s after
        # SIGTERM (ray-project/ray#64830): Serve's graceful stop takes longer.
        "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "TQDM_DISABLE": "1",
    }
    argv = [sys.executable, "-m", "bcdiag.serving.service"]
    return Service("inference service", argv, f"{url}{HEALTH_PATH}", url, env)


def check_app_kernels(settings: Settings) -> None:
    """Refuse a kernel cap the preheated pool alone would reach.

    Raises:
        ConfigurationError: ``BCDIAG_APP_MAX_KERNELS`` is not above ``BCDIAG_APP_POOL_SIZE``.
    """
    if 0 < settings.app_max_kernels <= settings.app_pool_size:
        raise ConfigurationError(
            f"BCDIAG_APP_MAX_KERNELS ({settings.app_max_kernels}) must exceed "
            f"BCDIAG_APP_POOL_SIZE ({settings.app_pool_size}): preheated kernels count "
            "towards the cap, so at most MAX_KERNELS - POOL_SIZE clinicians can have the "
            "app open"
        )


def app_service(settings: Settings, base_url: str = "/") -> Service:
    """The clinician app: Voilà serving notebooks/app.ipynb (no file browser, no code).

    Behind the hub (`base_url` ``/services/bcdiag-app/``) the hub-OAuth proxy strips that
    prefix and adds the signed-in user as a header; Voilà hands the header to the page's
    kernel as ``HTTP_X_CDSDASHBOARDS_JH_USER`` (`bcdiag.app.current_user` reads it).
    Preheated kernels receive it when the notebook calls `voila.utils.wait_for_request`.
    """
    check_app_kernels(settings)
    url = f"http://127.0.0.1:{settings.app_port}"
    idle_s = settings.idle_minutes * 60
    argv = [
        sys.executable, "-m", "voila", str(settings.notebooks_dir / "app.ipynb"),
        "--no-browser", f"--port={settings.app_port}", "--Voila.ip=127.0.0.1",
        f"--Voila.base_url={base_url}", "--Voila.server_url=/",
        "--VoilaConfiguration.template=bcdiag",  # no style sheets from a CDN (telemetry.py)
        # Full-size mammograms are 10-60 MB; tornado's websocket default (10 MiB) drops them.
        f'--Voila.tornado_settings={{"websocket_max_message_size": {MAX_UPLOAD_BYTES}}}',
        "--VoilaConfiguration.http_header_envs=X-CDSDASHBOARDS-JH-USER",
        "--VoilaConfiguration.multi_kernel_manager_class="
        "bcdiag.platform.kernels.CappedKernelManager",
        f"--CappedKernelManager.max_kernels={settings.app_max_kernels}",
        # A page left open and idle loses its kernel after this; a closed page's kernel
        # goes after CappedKernelManager.closed_page_timeout (30 s) + the interval.
        f"--MappingKernelManager.cull_idle_timeout={idle_s}",
        "--MappingKernelManager.cull_interval=15",
        # nbclient waits 4 s for a cell's outputs after its reply, then drops what is late:
        # with 20 pages opening at once on 2 cores the app's widgets came later (blank pages)
        "--VoilaExecutor.iopub_timeout=60",
    ]  # fmt: skip
    if settings.app_pool_size > 0:
        argv += ["--preheat_kernel=True", f"--pool_size={settings.app_pool_size}"]
    env = {
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "BCDIAG_HOME": str(settings.home),
        "BCDIAG_SCORING_URL": settings.resolved_scoring_url,
        SCORING_TOKEN_ENV: scoring_token(settings),
        "JUPYTER_PATH": with_jupyter_dir("JUPYTER_PATH"),  # where the bcdiag template is
        # A kernel's stderr ends up on the clinician's page: no library progress bars.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "TQDM_DISABLE": "1",
    }
    if base_url != "/":
        token = app_token(settings)
        argv.append(f"--Voila.config_file_paths={app_token_config(settings, token)}")
        env["BCDIAG_APP_BEHIND_HUB"] = "true"
        env[PROXIED_TOKEN_ENV] = token
    # Health: a static file, since rendering the page would start (and strand) a kernel.
    return Service("clinician app", argv, f"{url}{APP_HEALTH_PATH}", f"{url}/", env)


def scheduler_service(settings: Settings) -> Service:
    """The retraining scheduler (`bcdiag.lifecycle.scheduler.serve`) as `make run` starts it."""
    url = f"http://127.0.0.1:{settings.scheduler_port}"
    argv = [sys.executable, "-m", "bcdiag", "retrain", "--schedule"]
    env = {
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "BCDIAG_HOME": str(settings.home),
        "BCDIAG_SCHEDULER_PORT": str(settings.scheduler_port),
    }
    return Service("retraining scheduler", argv, f"{url}/health", f"{url}/health", env)
