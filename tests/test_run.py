"""`bcdiag run` really starts the platform (MLflow, JupyterHub and its services), creates the
first admin once, and stops everything on Ctrl-C; a second start is quick. A supervisor
killed outright takes every process below it along, and the next start cleans up after
one that could not; a port held by another program is named, and that program left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from bcdiag.platform.researchers import remove_os_account
from bcdiag.platform.startup import process_record
from bcdiag.processes import free_port
from bcdiag.settings import Settings

PORTS = (
    "PORT", "HUB_API_PORT", "PROXY_API_PORT", "APP_PORT", "APP_PROXY_PORT", "MLFLOW_PORT",
    "MLFLOW_PROXY_PORT", "SCHEDULER_PORT", "SCORING_PORT",
)  # fmt: skip
START_TIMEOUT_S = 240  # hub + proxy + MLflow on a loaded 2-core machine
ADMIN_PASSWORD = "horse battery staple 0"
RESEARCHER, RESEARCHER_PASSWORD = "rita", "horse battery staple 2"
EVERY_KIND = (
    "mlflow server", "uvicorn", "jupyterhub -f", "configurable-http-proxy",
    "bcdiag.platform.proxy", "voila", "ipykernel_launcher", "jupyterhub-singleuser",
    "retrain --schedule",
)  # fmt: skip


def platform_env(home: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The environment of a `bcdiag run` on free ports under `home`, and those ports."""
    ports = {name: free_port() for name in PORTS}
    env = {
        **os.environ,
        **{f"BCDIAG_{name}": str(port) for name, port in ports.items()},
        "BCDIAG_HOME": str(home),
        "BCDIAG_APP_POOL_SIZE": "0",
        "BCDIAG_TRAIN_ON_FIRST_START": "false",  # first start: tests/test_scheduler.py
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BCDIAG_DATABASE_URL", "BCDIAG_ADMIN_USER", "BCDIAG_ADMIN_PASSWORD"):
        env.pop(name, None)
    for name in ("MLFLOW_TRACKING_URI", "BCDIAG_STORAGE_URL"):
        env.pop(name, None)
    return env, ports


def start_platform(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`bcdiag run`, its output (and its services') appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bcdiag", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait_for_text(
    log: Path, process: subprocess.Popen[bytes], text: str, timeout_s: float = START_TIMEOUT_S
) -> str:
    """The log once `text` is in it (the part written since `process` started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace")
        if text in output:
            return output
        if process.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"no {text!r} within {timeout_s} s: {log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=90) == 0


def _served(ports: dict[str, int]) -> list[str]:
    open_ports = []
    for name, port in ports.items():
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                open_ports.append(f"{name} {port}")
    return open_ports


def _assert_closed(ports: dict[str, int], grace_s: float = 15.0) -> None:
    """Every port closed (Voilà may take a few seconds to stop its kernels)."""
    deadline = time.monotonic() + grace_s
    while open_ports := _served(ports):
        assert time.monotonic() < deadline, f"still served: {open_ports}"
        time.sleep(0.5)


def _sign_in(
    url: str, name: str, password: str, lands_in: str | None = "/hub/admin"
) -> requests.Session:
    """A signed-in session of `name`, checked to land in `lands_in` (None: anywhere)."""
    session = requests.Session()
    session.get(f"{url}/hub/login", timeout=30)
    signed_in = session.post(
        f"{url}/hub/login",
        data={
            "username": name,
            "password": password,
            "_xsrf": session.cookies.get("_xsrf", path="/hub/"),
        },
        timeout=60,
    )
    if lands_in is not None:
        assert signed_in.url == f"{url}{lands_in}", f"{name} did not land in {lands_in}"
    return session


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every account may enter (pytest's are closed), for researchers' homes."""
    folder = Path(tempfile.mkdtemp(prefix="bcdiag-homes-"))
    folder.chmod(0o755)
    yield folder
    remove_os_account(RESEARCHER)
    shutil.rmtree(folder, ignore_errors=True)


def start_everything(url: str, session: requests.Session, env: dict[str, str]) -> None:
    """As the signed-in admin: the app (Voilà and a kernel) and the MLflow UI; then a new
    researcher's JupyterLab with a kernel; so that every kind of process `make run` has runs."""
    app = session.get(f"{url}/services/bcdiag-app/", timeout=300)
    assert "application/vnd.jupyter.widget-view+json" in app.text  # a kernel built the app
    assert session.get(f"{url}/services/mlflow/", timeout=300).status_code == 200
    added = subprocess.run(
        [sys.executable, "-m", "bcdiag", "users", "add", RESEARCHER, "--group", "researchers"],
        input=RESEARCHER_PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    researcher = _sign_in(url, RESEARCHER, RESEARCHER_PASSWORD, None)  # starts the server
    lab = f"{url}/user/{RESEARCHER}/"
    deadline = time.monotonic() + 180
    while not researcher.get(f"{lab}lab", timeout=60).url.endswith(f"/user/{RESEARCHER}/lab"):
        assert time.monotonic() < deadline, "the researcher's JupyterLab did not start"
        time.sleep(2)
    lab_xsrf = {"X-XSRFToken": researcher.cookies.get("_xsrf", path=f"/user/{RESEARCHER}/") or ""}
    kernel = researcher.post(f"{lab}api/kernels", headers=lab_xsrf, timeout=120)
    assert kernel.status_code == 201, kernel.text


def tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and every process below it."""
    top = psutil.Process(pid)
    return [top, *top.children(recursive=True)]


def _commands(processes: list[psutil.Process]) -> str:
    return "\n".join(" ".join(p.cmdline()) for p in processes if p.is_running())


@pytest.mark.slow
def test_run_starts_platform_creates_admin_once_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env, ports = platform_env(tmp_path / "home")
    url = f"http://127.0.0.1:{ports['PORT']}"
    log = tmp_path / "run.log"
    process = start_platform(env, log)
    try:
        output = wait_for_text(log, process, "bcdiag is running")
        found = re.search(r"first admin: admin  password: (\S+)", output)
        assert found, output
        assert f"Sign in at {url}/" in output
        # the app's Voilà starts with its proxy, before anyone asks for the app
        assert _eventually(lambda: _app_voila(process, ports["APP_PORT"]), 120), "no Voilà"
        session = _sign_in(url, "admin", found.group(1))  # admins land in the admin panel
        mlflow_health = f"http://127.0.0.1:{ports['MLFLOW_PORT']}/health"
        assert requests.get(mlflow_health, timeout=10).status_code == 200
        app = session.get(f"{url}/services/bcdiag-app/", timeout=180)
        assert "application/vnd.jupyter.widget-view+json" in app.text  # the app was built
        assert (tmp_path / "home" / "bcdiag.sqlite").exists()
        _stop(process)
    finally:
        if process.poll() is None:
            process.kill()
    _assert_closed(ports)
    assert not process_record(Settings(home=tmp_path / "home")).exists()  # a clean stop

    started = time.monotonic()
    log = tmp_path / "second.log"
    process = start_platform(env, log)
    try:
        output = wait_for_text(log, process, "bcdiag is running")
        print(f"second start: {time.monotonic() - started:.1f} s")
        assert "first admin" not in output, "the admin is created on the first start only"
        _stop(process)
    finally:
        if process.poll() is None:
            process.kill()


def _app_voila(process: subprocess.Popen[bytes], app_port: int) -> bool:
    """Whether the clinician app's Voilà is running below `process`."""
    try:
        commands = _commands(tree(process.pid)).splitlines()
    except psutil.NoSuchProcess:  # a process ended while listed: look again
        return False
    return any("voila" in line and f"--port={app_port}" in line for line in commands)


def _eventually(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def _kill_running(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


@pytest.mark.slow
def test_a_killed_supervisor_takes_everything_along_and_the_next_start_cleans_up(
    tmp_path: Path, open_folder: Path
) -> None:
    """kill -9 of `make run`: nothing of it stays. If its hub dies with it (nothing can
    stop the hub's children then), the next start ends what is left and starts."""
    home = tmp_path / "home"
    env, ports = platform_env(home)
    env["BCDIAG_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    env["BCDIAG_RESEARCHER_HOMES"] = str(open_folder)
    url = f"http://127.0.0.1:{ports['PORT']}"
    started: list[psutil.Process] = []  # killed at the end whatever happened
    try:
        log = tmp_path / "first.log"
        first = start_platform(env, log)
        started.append(psutil.Process(first.pid))
        wait_for_text(log, first, "bcdiag is running")
        start_everything(url, _sign_in(url, "admin", ADMIN_PASSWORD), env)
        processes = tree(first.pid)
        started += processes
        commands = _commands(processes)
        assert all(kind in commands for kind in EVERY_KIND), commands
        killed = time.monotonic()
        first.kill()
        first.wait()
        _, alive = psutil.wait_procs(processes, timeout=30)
        assert not alive, f"left running after kill -9: {_commands(alive)}"
        print(f"{len(processes)} processes ended {time.monotonic() - killed:.1f} s after kill -9")
        _assert_closed(ports, grace_s=1)

        log = tmp_path / "second.log"
        second = start_platform(env, log)
        started.append(psutil.Process(second.pid))
        wait_for_text(log, second, "bcdiag is running")
        again = subprocess.run(
            [sys.executable, "-m", "bcdiag", "run"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert again.returncode == 1, again.stdout
        assert f"bcdiag already runs with this home: pid {second.pid}" in again.stderr
        session = _sign_in(url, "admin", ADMIN_PASSWORD)
        assert session.get(f"{url}/services/bcdiag-app/", timeout=300).status_code == 200
        record = process_record(Settings(home=home))
        deadline = time.monotonic() + 30
        while "voila" not in record.read_text():
            assert time.monotonic() < deadline, "Voilà never entered the record"
            time.sleep(1)
        hub = next(p for p in tree(second.pid) if "jupyterhub -f" in " ".join(p.cmdline()))
        orphans = hub.children(recursive=True)  # only the hub would stop these
        started += orphans
        hub.suspend()  # it must not handle the SIGTERM its parent's death sends
        second.kill()
        second.wait()
        hub.kill()
        hub.wait(timeout=10)
        time.sleep(3)
        assert f"PORT {ports['PORT']}" in _served(ports), "the hub's proxy is left running"

        log = tmp_path / "third.log"
        third = start_platform(env, log)
        started.append(psutil.Process(third.pid))
        output = wait_for_text(log, third, "bcdiag is running")
        assert "process(es) a killed bcdiag run left behind" in output
        _, alive = psutil.wait_procs(orphans, timeout=1)
        assert not alive, _commands(alive)
        _stop(third)
        _assert_closed(ports)
    finally:
        _kill_running(started)


def test_a_port_held_by_another_program_is_named_and_that_program_left_alone(
    tmp_path: Path,
) -> None:
    env, ports = platform_env(tmp_path / "home")
    port = ports["HUB_API_PORT"]
    squatter = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _served({"HUB_API_PORT": port}):
            assert time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.2)
        done = subprocess.run(
            [sys.executable, "-m", "bcdiag", "run"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1
        assert f"port {port} (BCDIAG_HUB_API_PORT) is in use by pid {squatter.pid}" in done.stderr
        assert f"-m http.server {port} --bind 127.0.0.1" in done.stderr
        assert "starting" not in done.stdout, "nothing is started while a port is taken"
        assert squatter.poll() is None, "another program's process is not ours to stop"
    finally:
        squatter.terminate()
        squatter.wait()


def test_a_kernel_cap_the_preheated_pool_would_fill_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    env, ports = platform_env(tmp_path / "home")
    env |= {"BCDIAG_APP_POOL_SIZE": "10", "BCDIAG_APP_MAX_KERNELS": "10"}
    done = subprocess.run(
        [sys.executable, "-m", "bcdiag", "run"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "BCDIAG_APP_MAX_KERNELS (10) must exceed BCDIAG_APP_POOL_SIZE (10)" in done.stderr
    assert "Traceback" not in done.stderr and not _served(ports)
