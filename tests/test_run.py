"""`bcdiag run` really starts MLflow, JupyterLab and the clinician app and stops them on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bcdiag.services import free_port


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


@pytest.mark.slow
def test_run_starts_services_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    lab_port, mlflow_port, app_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "BCDIAG_HOME": str(tmp_path / "home"),
        "BCDIAG_PORT": str(lab_port),
        "BCDIAG_MLFLOW_PORT": str(mlflow_port),
        "BCDIAG_APP_PORT": str(app_port),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("BCDIAG_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "bcdiag", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = _wait_for_line(process, "bcdiag is running", timeout_s=180)
        with urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/health", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{lab_port}/api", timeout=5) as r:
            assert "version" in json.load(r)
        with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/", timeout=60) as r:
            assert "application/vnd.jupyter.widget-view+json" in r.read().decode()  # app built
        assert any(f"127.0.0.1:{lab_port}/lab?token=" in line for line in output)
        assert any(f"clinician app: http://127.0.0.1:{app_port}/" in line for line in output)
        assert (tmp_path / "home" / "bcdiag.sqlite").exists()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    for port in (lab_port, mlflow_port, app_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
