"""The processes `make run` starts, and a small supervisor that runs them together.

Each service is a real server bound to 127.0.0.1; the supervisor waits for each
to answer its health URL, prints where to go, and on Ctrl-C (SIGINT) or SIGTERM
stops them all. If one dies, the others are stopped and the exit code says so.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from bcdiag.errors import BcdiagError
from bcdiag.settings import Settings


@dataclass(frozen=True)
class Service:
    """One server process: how to start it and how to tell it is up."""

    name: str
    argv: list[str]
    health_url: str
    public_url: str
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
APP_HEALTH_PATH = "/voila/templates/lab/static/labvariables.css"


def app_service(settings: Settings, base_url: str = "/") -> Service:
    """The clinician app: Voilà serving notebooks/app.ipynb (no file browser, no code).

    Behind the hub (`base_url` ``/services/bcdiag-app/``) the hub-OAuth proxy strips that
    prefix and adds the signed-in user as a header; Voilà hands the header to the page's
    kernel as ``HTTP_X_CDSDASHBOARDS_JH_USER`` (`bcdiag.app.current_user` reads it).
    Preheated kernels receive it when the notebook calls `voila.utils.wait_for_request`.
    """
    url = f"http://127.0.0.1:{settings.app_port}"
    idle_s = settings.idle_minutes * 60
    argv = [
        sys.executable, "-m", "voila", str(settings.notebooks_dir / "app.ipynb"),
        "--no-browser", f"--port={settings.app_port}", "--Voila.ip=127.0.0.1",
        f"--Voila.base_url={base_url}", "--Voila.server_url=/",
        # Full-size mammograms are 10-60 MB; tornado's websocket default (10 MiB) drops them.
        f'--Voila.tornado_settings={{"websocket_max_message_size": {MAX_UPLOAD_BYTES}}}',
        "--VoilaConfiguration.http_header_envs=X-CDSDASHBOARDS-JH-USER",
        "--VoilaConfiguration.multi_kernel_manager_class="
        "bcdiag.hub_kernels.CappedKernelManager",
        f"--CappedKernelManager.max_kernels={settings.app_max_kernels}",
        # A closed tab's kernel is shut down by Voilà; one left open and idle, after this.
        f"--MappingKernelManager.cull_idle_timeout={idle_s}",
        "--MappingKernelManager.cull_interval=60",
    ]  # fmt: skip
    if settings.app_pool_size > 0:
        argv += ["--preheat_kernel=True", f"--pool_size={settings.app_pool_size}"]
    env = {"MLFLOW_TRACKING_URI": settings.resolved_tracking_uri, "BCDIAG_HOME": str(settings.home)}
    if base_url != "/":
        env["BCDIAG_APP_BEHIND_HUB"] = "true"
    # Health: a static file, since rendering the page would start (and strand) a kernel.
    return Service("clinician app", argv, f"{url}{APP_HEALTH_PATH}", f"{url}/", env)


def platform_services(settings: Settings) -> list[Service]:
    """Everything `make run` starts, in start order; append new services here.

    MLflow runs under this supervisor on 127.0.0.1. The hub (`bcdiag.hub`) starts
    configurable-http-proxy, the researchers' servers, and as hub-managed services the
    hub-OAuth proxies that run the clinician app (Voilà, /services/bcdiag-app/) and the
    MLflow UI (/services/mlflow/).
    """
    from bcdiag.hub import hub_service  # bcdiag.hub builds on this module
    from bcdiag.scheduler import scheduler_service

    return [mlflow_service(settings), hub_service(settings), scheduler_service(settings)]


def start(service: Service, timeout_s: float = 120.0) -> subprocess.Popen[bytes]:
    """Start one service in its own session and wait until it answers its health URL."""
    process = subprocess.Popen(
        service.argv,
        env={**os.environ, **service.env},
        start_new_session=True,  # Ctrl-C reaches the supervisor, which stops children in order
    )
    try:
        _wait_healthy(service, process, timeout_s)
    except BcdiagError:
        stop([process])
        raise
    return process


def _wait_healthy(service: Service, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BcdiagError(f"{service.name} exited with code {process.returncode} at start")
        try:
            with urllib.request.urlopen(service.health_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise BcdiagError(f"{service.name} did not answer {service.health_url} in {timeout_s:.0f} s")


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate processes in reverse start order; kill any that outlive 15 s."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    for process in reversed(processes):
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Interrupted(BcdiagError):
    """Ctrl-C or SIGTERM arrived while the services were starting."""


def supervise(
    services: Sequence[Service], start_timeout_s: float = 120.0, welcome: str = ""
) -> int:
    """Start the services, print `welcome`, wait until Ctrl-C/SIGTERM or one exits; stop
    all; exit code."""
    processes: list[subprocess.Popen[bytes]] = []
    stopping, starting = False, True

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if starting:  # don't sit out a start timeout: unwind now, the finally stops all
            raise Interrupted(f"signal {signum} during start")

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for service in services:
            print(f"starting {service.name} …", flush=True)
            processes.append(start(service, start_timeout_s))
            print(f"{service.name}: {service.public_url}", flush=True)
        starting = False
        if welcome:
            print(welcome, flush=True)
        print("bcdiag is running; press Ctrl-C to stop.", flush=True)
        while not stopping:
            for service, process in zip(services, processes, strict=True):
                if process.poll() is not None:
                    print(f"{service.name} stopped unexpectedly ({process.returncode})")
                    return 1
            time.sleep(0.5)
        return 0
    except Interrupted:
        return 0
    finally:
        starting = False
        stop(processes)
        print("bcdiag stopped.", flush=True)
