"""The retraining scheduler: one cycle at each time of ``BCDIAG_RETRAIN_CRON``.

`serve` (``bcdiag retrain --schedule``, started by `make run` through
`bcdiag.platform.services.scheduler_service`) fires `bcdiag.lifecycle.retrain.run_cycle`
on the cron schedule (UTC), one cycle after another in one thread, and answers ``/health`` on
127.0.0.1:``BCDIAG_SCHEDULER_PORT`` with the schedule and what each firing did. A
firing while another cycle holds the lock (a ``bcdiag retrain --now``, a second
scheduler) is refused and recorded; the next comes at the next cron time.
On the platform's first start, `first_start` runs a cycle at once for each modality
that has no champion yet, so a fresh `make run` ends up with a model.
On Kubernetes, ``hub_config/k8s/retrain-cronjob.yaml`` runs ``--now`` instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from croniter import croniter

from bcdiag.datasets import public_sets
from bcdiag.errors import BcdiagError, ConfigurationError
from bcdiag.lifecycle.retrain import CycleOutcome, CycleRunning, run_cycle
from bcdiag.lifecycle.retrain_data import base_dataset, missing_base_data
from bcdiag.models.registry import champion, model_name_for
from bcdiag.processes import end_descendants
from bcdiag.settings import Settings

RAN, REFUSED, FAILED = "ran", "refused", "failed"


@dataclass(frozen=True)
class Firing:
    """One time the schedule came due: ``result`` is ran, refused or failed."""

    at: str
    result: str
    detail: str
    outcomes: list[dict[str, Any]] = field(default_factory=list)


class Scheduler:
    """Fires `cycle` at each time of the cron expression `cron` (UTC)."""

    def __init__(self, cron: str, cycle: Callable[[], Sequence[CycleOutcome]] = run_cycle) -> None:
        if not croniter.is_valid(cron):
            raise ConfigurationError(
                f"BCDIAG_RETRAIN_CRON {cron!r} is not a cron expression, e.g. '0 3 * * 0' "
                "(Sundays 03:00 UTC); a sixth field gives seconds"
            )
        self.cron = cron
        self.cycle = cycle
        self.history: list[Firing] = []
        self.next_at: datetime | None = None
        self.running_since: str | None = None  # the cycle under way, if any
        self._lock = threading.Lock()

    def next_fire(self, after: datetime) -> datetime:
        """The first cron time strictly after `after`."""
        found: datetime = croniter(self.cron, after).get_next(datetime)
        return found

    def fire(self, cycle: Callable[[], Sequence[CycleOutcome]] | None = None) -> Firing:
        """Run one cycle (default: the scheduled one) now; refused if one is already running."""
        at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            self.running_since = at
        try:
            outcomes = (cycle or self.cycle)()
        except CycleRunning as error:
            firing = Firing(at, REFUSED, str(error))
        except BcdiagError as error:  # e.g. storage down: recorded, the schedule goes on
            firing = Firing(at, FAILED, str(error))
        else:
            decisions = ", ".join(f"{o.model} {o.decision}" for o in outcomes)
            firing = Firing(at, RAN, decisions, [o.as_json() for o in outcomes])
        with self._lock:
            self.history.append(firing)
            self.running_since = None
        print(f"retraining {firing.result} at {at}: {firing.detail}", file=sys.stderr, flush=True)
        return firing

    def run(self, stop: threading.Event) -> None:
        """Fire on schedule until `stop` is set."""
        while not stop.is_set():
            now = datetime.now(UTC)
            with self._lock:
                self.next_at = self.next_fire(now)
            if stop.wait((self.next_at - now).total_seconds()):
                return
            self.fire()

    def status(self) -> dict[str, Any]:
        """The schedule, the cycle running now, the next firing and every firing so far."""
        with self._lock:
            return {
                "cron": self.cron,
                "running_since": self.running_since,
                "next": None if self.next_at is None else self.next_at.isoformat(),
                "firings": [asdict(f) for f in self.history],
            }


def first_start(settings: Settings, scheduler: Scheduler) -> Firing | None:
    """Train, gate and promote a champion for each modality that has none (if enabled).

    Base data: BCDIAG_DATA_DIR if it exists, else <home>/data, where each missing
    modality's public base set is downloaded first (pinned, every file's SHA-256
    verified; `bcdiag.datasets.public_sets`). Modalities without base data are left
    alone, with the reason. Returns the firing, or None when there was nothing to do.
    """
    if not settings.train_on_first_start:
        return None
    folder = settings.base_data_dir
    downloadable = folder == settings.home / "data"  # bcdiag fetches only into its own folder
    datasets = {m: base_dataset(m, settings) for m in settings.retrain_modalities}
    fetchable = {m for m, dataset in datasets.items() if downloadable and dataset != "folder"}
    trainable = [
        m for m in datasets if missing_base_data(m, folder, settings) is None or m in fetchable
    ]
    missing = [m for m in trainable if champion(model_name_for(m)) is None]
    for modality in missing:
        if missing_base_data(modality, folder, settings):
            _fetch_base_set(datasets[modality], folder)
    missing = [m for m in missing if missing_base_data(m, folder, settings) is None]
    if not missing:
        return None
    print(
        f"first start: no champion for {', '.join(missing)}; training one now",
        file=sys.stderr,
        flush=True,
    )
    return scheduler.fire(
        lambda: run_cycle(modalities=missing, data_dir=folder, user="first-start")
    )


def _fetch_base_set(name: str, folder: Path) -> None:
    try:
        public_sets.fetch(name, folder)
    except BcdiagError as error:  # offline or incomplete: that modality is skipped, and why
        print(f"first start: {error}", file=sys.stderr, flush=True)


def status_server(scheduler: Scheduler, port: int) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:`port` answering ``/health`` with `Scheduler.status`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/health":
                self.send_error(404, "only /health is served")
                return
            body = json.dumps(scheduler.status()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # health checks every half second would drown the log

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve(settings: Settings) -> int:
    """Run the scheduler and its status page until SIGTERM or Ctrl-C; the exit code.

    Cycles run in a worker thread, so a stop is prompt even mid-cycle: the cycle's
    processes (its notebook's kernel) are ended and the process exits at once. Such a
    cycle is abandoned where it was: its MLflow run is left unfinished and the champion
    has moved only if the gate had already promoted the challenger.
    """
    scheduler = Scheduler(settings.retrain_cron)
    server = status_server(scheduler, settings.scheduler_port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"retraining scheduler: cron {settings.retrain_cron!r} (UTC)", file=sys.stderr)

    def cycles_until_stopped() -> None:
        first_start(settings, scheduler)
        scheduler.run(stop)

    work = ThreadPoolExecutor(1, thread_name_prefix="retraining").submit(cycles_until_stopped)
    work.add_done_callback(lambda _: stop.set())  # a failure stops the process too
    try:
        while not stop.wait(1.0):
            pass
        if not wait([work], timeout=1.0).done:  # between cycles it ends at once
            print("retraining scheduler: stopped during a cycle", file=sys.stderr, flush=True)
            end_descendants(timeout_s=5.0)
            os._exit(0)  # not sys.exit, which would wait for the cycle's thread
    finally:
        server.shutdown()
        server.server_close()
    work.result()  # raises what ended the cycles early, if anything
    return 0
