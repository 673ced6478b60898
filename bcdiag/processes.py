"""Server processes: how to start one, wait until it answers, and stop it; a supervisor
that runs several together.

Each service is a real server bound to 127.0.0.1; the supervisor waits for each
to answer its health URL, prints where to go, and on Ctrl-C (SIGINT) or SIGTERM
stops them all. If one dies, the others are stopped and the exit code says so.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from bcdiag.errors import BcdiagError


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
