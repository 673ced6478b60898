"""The processes `make run` starts, and a small supervisor that runs them together.

Each service is a real server bound to 127.0.0.1; the supervisor waits for each
to answer its health URL, prints where to go, and on Ctrl-C (SIGINT) or SIGTERM
stops them all. If one dies, the others are stopped and the exit code says so.
"""

from __future__ import annotations

import os
import secrets
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


def mlflow_service(settings: Settings) -> Service:
    """MLflow tracking server + model registry: SQLite backend, local artifacts."""
    store = settings.home / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{settings.mlflow_port}"
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(settings.mlflow_port),
        "--backend-store-uri", f"sqlite:///{(store / 'mlflow.sqlite').resolve()}",
        "--artifacts-destination", str((store / "artifacts").resolve()),
        "--workers", "1",
        "--uvicorn-opts", "--log-level warning",
    ]  # fmt: skip
    # MLflow 3.17's server starts ~10 job-runner processes by default; bcdiag uses no
    # server-side jobs, and on 2 cores they slowed training ~25x.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return Service("mlflow", argv, f"{url}/health", url, env)


def lab_service(settings: Settings, token: str) -> Service:
    """JupyterLab for researchers over the notebooks folder (until the hub fronts it)."""
    url = f"http://127.0.0.1:{settings.port}"
    argv = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ip", "127.0.0.1",
        "--port", str(settings.port),
        f"--ServerApp.root_dir={settings.notebooks_dir}",
        "--ServerApp.port_retries=0",
    ]  # fmt: skip
    if os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses without this
        argv.append("--allow-root")
    env = {"JUPYTER_TOKEN": token, "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri}
    return Service("jupyterlab", argv, f"{url}/api", f"{url}/lab?token={token}", env)


MAX_UPLOAD_BYTES = 200 * 2**20


def app_service(settings: Settings) -> Service:
    """The clinician app: Voilà serving notebooks/app.ipynb (no file browser, no code)."""
    url = f"http://127.0.0.1:{settings.app_port}"
    argv = [
        sys.executable, "-m", "voila", str(settings.notebooks_dir / "app.ipynb"),
        "--no-browser", f"--port={settings.app_port}", "--Voila.ip=127.0.0.1",
        # Full-size mammograms are 10-60 MB; tornado's websocket default (10 MiB) drops them.
        f'--Voila.tornado_settings={{"websocket_max_message_size": {MAX_UPLOAD_BYTES}}}',
    ]  # fmt: skip
    env = {"MLFLOW_TRACKING_URI": settings.resolved_tracking_uri, "BCDIAG_HOME": str(settings.home)}
    return Service("clinician app", argv, f"{url}/", f"{url}/", env)


def platform_services(settings: Settings) -> list[Service]:
    """Everything `make run` starts, in start order."""
    return [
        mlflow_service(settings),
        lab_service(settings, secrets.token_urlsafe(24)),
        app_service(settings),
    ]


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


def supervise(services: Sequence[Service], start_timeout_s: float = 120.0) -> int:
    """Start the services, wait until Ctrl-C/SIGTERM or one exits; stop all; exit code."""
    processes: list[subprocess.Popen[bytes]] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for service in services:
            print(f"starting {service.name} …", flush=True)
            processes.append(start(service, start_timeout_s))
            print(f"{service.name}: {service.public_url}", flush=True)
        print("bcdiag is running; press Ctrl-C to stop.", flush=True)
        while not stopping:
            for service, process in zip(services, processes, strict=True):
                if process.poll() is not None:
                    print(f"{service.name} stopped unexpectedly ({process.returncode})")
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        stop(processes)
        print("bcdiag stopped.", flush=True)
