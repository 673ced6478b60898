"""`bcdiag run` really starts the platform (MLflow, JupyterHub and its services), creates the
first admin once, and stops everything on Ctrl-C; a second start is quick."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bcdiag.processes import free_port

PORTS = (
    "PORT", "HUB_API_PORT", "PROXY_API_PORT", "APP_PORT", "APP_PROXY_PORT", "MLFLOW_PORT",
    "MLFLOW_PROXY_PORT", "SCHEDULER_PORT",
)  # fmt: skip


def _wait_for_line(process: subprocess.Popen[str], text: str, timeout_s: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    pytest.fail(f"no {text!r} within {timeout_s} s; output: {''.join(seen)}")


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bcdiag", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=90) == 0


def _assert_closed(ports: dict[str, int], grace_s: float = 15.0) -> None:
    """Every port closed (Voilà may take a few seconds to stop its kernels)."""
    deadline = time.monotonic() + grace_s
    while True:
        open_ports = []
        for name, port in ports.items():
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    open_ports.append(f"{name} {port}")
        if not open_ports:
            return
        assert time.monotonic() < deadline, f"still served after Ctrl-C: {open_ports}"
        time.sleep(0.5)


@pytest.mark.slow
def test_run_starts_platform_creates_admin_once_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ports = {name: free_port() for name in PORTS}
    env = {
        **os.environ,
        **{f"BCDIAG_{name}": str(port) for name, port in ports.items()},
        "BCDIAG_HOME": str(tmp_path / "home"),
        "BCDIAG_APP_POOL_SIZE": "0",
        "BCDIAG_TRAIN_ON_FIRST_START": "false",  # first start: tests/test_scheduler.py
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BCDIAG_DATABASE_URL", "BCDIAG_ADMIN_USER", "BCDIAG_ADMIN_PASSWORD"):
        env.pop(name, None)
    url = f"http://127.0.0.1:{ports['PORT']}"
    process = _start(env)
    try:
        output = "".join(_wait_for_line(process, "bcdiag is running", timeout_s=240))
        found = re.search(r"first admin: admin  password: (\S+)", output)
        assert found, output
        assert f"Sign in at {url}/" in output
        session = requests.Session()
        session.get(f"{url}/hub/login", timeout=30)
        signed_in = session.post(
            f"{url}/hub/login",
            data={
                "username": "admin",
                "password": found.group(1),
                "_xsrf": session.cookies.get("_xsrf", path="/hub/"),
            },
            timeout=60,
        )
        assert signed_in.url == f"{url}/hub/admin"  # admins land in the admin panel
        mlflow_health = f"http://127.0.0.1:{ports['MLFLOW_PORT']}/health"
        assert requests.get(mlflow_health, timeout=10).status_code == 200
        app = session.get(f"{url}/services/bcdiag-app/", timeout=180)  # starts Voilà
        assert "application/vnd.jupyter.widget-view+json" in app.text  # the app was built
        assert (tmp_path / "home" / "bcdiag.sqlite").exists()
        _stop(process)
    finally:
        if process.poll() is None:
            process.kill()
    _assert_closed(ports)

    started = time.monotonic()
    process = _start(env)
    try:
        output = "".join(_wait_for_line(process, "bcdiag is running", timeout_s=240))
        print(f"second start: {time.monotonic() - started:.1f} s")
        assert "first admin" not in output, "the admin is created on the first start only"
        _stop(process)
    finally:
        if process.poll() is None:
            process.kill()
