"""Server processes: how to start one, wait until it answers, and stop it; a supervisor
that runs several together.

Each service is a real server bound to 127.0.0.1; the supervisor waits for each
to answer its health URL, prints where to go, and on Ctrl-C (SIGINT), SIGTERM or SIGHUP
(a closed terminal) stops them all. If one dies, the others are stopped and the exit
code says so.

A supervisor killed outright (SIGKILL, the OOM killer) cannot stop anything, so:

- each service gets SIGTERM from Linux when the supervisor dies (``PR_SET_PDEATHSIG``)
  and stops what it started itself (the hub its proxy, services and servers; MLflow
  its uvicorn; Jupyter kernels notice their parent is gone);
- the supervisor keeps a record of every process below it (pid and start time) in a
  file; the next start (`reclaim`) ends whatever of that record still runs, and names
  the process holding a port it needs if that process is not one of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bcdiag.errors import BcdiagError

STOP_TIMEOUT_S = 10.0  # a service that has not stopped after SIGTERM this long is killed
RECORD_EVERY_S = 5.0  # how often the supervisor refreshes its record of processes
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class Service:
    """One server process: how to start it and how to tell it is up.

    ``also_ready``: health URLs of servers it starts itself (the hub's managed services)
    that must answer too before it counts as started.
    """

    name: str
    argv: list[str]
    health_url: str
    public_url: str
    env: dict[str, str] = field(default_factory=dict)
    also_ready: tuple[str, ...] = ()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ending_with_this_thread() -> Callable[[], None] | None:
    """A ``preexec_fn`` after which the child gets SIGTERM when the calling thread ends,
    however it ends (Linux ``PR_SET_PDEATHSIG``); None on other systems.

    A few lines of ctypes rather than a dependency: no maintained library wraps just
    this call, and a process-supervisor library would not reach processes the hub starts.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def end_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return end_with_parent


def start(service: Service, timeout_s: float = 120.0) -> subprocess.Popen[bytes]:
    """Start one service in its own session and wait until it answers its health URL.

    The service gets SIGTERM when the thread that called this ends, so call it from the
    thread that stops the service (the supervisor's main thread).
    """
    process = subprocess.Popen(
        service.argv,
        env={**os.environ, **service.env},
        start_new_session=True,  # Ctrl-C reaches the supervisor, which stops children in order
        preexec_fn=_ending_with_this_thread(),
    )
    try:
        _wait_healthy(service, process, timeout_s)
    except BcdiagError:
        stop([process])
        raise
    return process


def _wait_healthy(service: Service, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = [service.health_url, *service.also_ready]
    while waiting and time.monotonic() < deadline:
        if process.poll() is not None:
            raise BcdiagError(f"{service.name} exited with code {process.returncode} at start")
        if _answers(waiting[0]):
            waiting.pop(0)
            continue
        time.sleep(0.5)
    if waiting:
        raise BcdiagError(f"{service.name} did not answer {waiting[0]} in {timeout_s:.0f} s")


def _answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate processes in reverse start order; kill any that outlive `STOP_TIMEOUT_S`."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in reversed(processes):
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid} ({' '.join(process.cmdline())[:300]})"
    except psutil.Error:
        return f"pid {process.pid}"


def _snapshot(before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This process, every process below it, and those of `before` that still run (a
    process whose parent died leaves the tree but stays ours): pid, start time, command."""
    me = psutil.Process()
    entries = {}
    for process in [me, *me.children(recursive=True), *_running(before)]:
        try:
            started = process.create_time()
        except psutil.Error:
            continue  # ended meanwhile
        entries[process.pid] = {"pid": process.pid, "started": started, "what": _describe(process)}
    return list(entries.values())


def _write_record(record: Path, entries: list[dict[str, Any]]) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_suffix(".partial")
    partial.write_text(json.dumps(entries, indent=1))
    partial.replace(record)


def _read_record(record: Path) -> list[dict[str, Any]]:
    try:
        entries: list[dict[str, Any]] = json.loads(record.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise BcdiagError(
            f"cannot read {record} ({error}); remove it if bcdiag is not running"
        ) from error
    return entries


def _running(entries: list[dict[str, Any]]) -> list[psutil.Process]:
    """The recorded processes that still run (same pid and start time: not a reused pid)."""
    running = []
    for entry in entries:
        try:
            process = psutil.Process(entry["pid"])
            if (
                process.create_time() == entry["started"]
                and process.status() != psutil.STATUS_ZOMBIE  # ended, not yet reaped
            ):
                running.append(process)
        except psutil.Error:
            continue
    return running


def _end(processes: list[psutil.Process], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to each of `processes`; SIGKILL to those that outlive `timeout_s`."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout_s)


def end_descendants(timeout_s: float = STOP_TIMEOUT_S) -> None:
    """End every process below this one: SIGTERM, then SIGKILL after `timeout_s`."""
    _end(psutil.Process().children(recursive=True), timeout_s)


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _holders(port: int) -> str:
    """Who listens on `port`, as pids and commands, as far as this user may see."""
    try:
        pids = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        }
    except psutil.AccessDenied:
        pids = set()
    found = []
    for pid in sorted(p for p in pids if p is not None):
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(_describe(psutil.Process(pid)))
    return ", ".join(found) or "a process of another user"


def reclaim(record: Path, ports: Mapping[str, int]) -> None:
    """Make way for a supervisor that keeps its `record` there and binds `ports`.

    What an earlier supervisor recorded and left running (it was killed) is stopped
    and listed; then every port must be free.

    Args:
        ports: each port by the setting that chose it (named in the error).

    Raises:
        BcdiagError: the recorded supervisor itself still runs, or a port is held by
            another process, named with its pid and command.
    """
    entries = _read_record(record)
    left = _running(entries)
    if left and left[0].pid == entries[0]["pid"]:  # the supervisor comes first
        raise BcdiagError(
            f"bcdiag already runs with this home: {_describe(left[0])}; stop it first "
            f"(Ctrl-C where it runs, or kill {left[0].pid})"
        )
    if left:
        print(f"stopping {len(left)} process(es) a killed bcdiag run left behind:", flush=True)
        for process in left:
            print(f"  {_describe(process)}", flush=True)
        _end(left)
    record.unlink(missing_ok=True)
    taken = [
        f"port {port} ({name}) is in use by {_holders(port)}; stop that process or set "
        f"{name} to a free port"
        for name, port in ports.items()
        if not _is_free(port)
    ]
    if taken:
        raise BcdiagError("cannot start: " + "\n".join(taken))


class Interrupted(BcdiagError):
    """Ctrl-C or SIGTERM arrived while the services were starting."""


def supervise(
    services: Sequence[Service],
    start_timeout_s: float = 120.0,
    welcome: str = "",
    record: Path | None = None,
) -> int:
    """Start the services, print `welcome`, wait until Ctrl-C/SIGTERM/SIGHUP or one exits;
    stop all; exit code.

    Args:
        record: a file that lists this process and every process below it while they
            run (see `reclaim`); removed after a clean stop.
    """
    processes: list[subprocess.Popen[bytes]] = []
    stopping, starting = False, True
    recorded: list[dict[str, Any]] = []

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if starting:  # don't sit out a start timeout: unwind now, the finally stops all
            raise Interrupted(f"signal {signum} during start")

    def keep_record() -> None:
        nonlocal recorded
        if record is not None and (now := _snapshot(recorded)) != recorded:
            _write_record(record, now)
            recorded = now

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, request_stop)
    try:
        for service in services:
            print(f"starting {service.name} …", flush=True)
            processes.append(start(service, start_timeout_s))
            keep_record()
            print(f"{service.name}: {service.public_url}", flush=True)
        starting = False
        if welcome:
            print(welcome, flush=True)
        print("bcdiag is running; press Ctrl-C to stop.", flush=True)
        next_record = time.monotonic()
        while not stopping:
            for service, process in zip(services, processes, strict=True):
                if process.poll() is not None:
                    print(f"{service.name} stopped unexpectedly ({process.returncode})")
                    return 1
            if time.monotonic() >= next_record:
                keep_record()
                next_record = time.monotonic() + RECORD_EVERY_S
            time.sleep(0.5)
        return 0
    except Interrupted:
        return 0
    finally:
        starting = False
        stop(processes)  # each stops what it started (not behind its back: the hub restarts those)
        # What a service left behind (it was killed, or crashed) ends too.
        _end([p for p in _running(_snapshot(recorded)) if p.pid != os.getpid()])
        if record is not None:
            record.unlink(missing_ok=True)
        print("bcdiag stopped.", flush=True)
