"""Tracking that never crashes training: MLflow calls whose failures are contained.

`Tracker` sends params, metrics and figures to one MLflow run. A failed call (server
down, timeout, a value MLflow refuses) is counted and logged; the first one is also
reported with a `TrackingWarning`, and after ``max_failures`` the tracker stops
calling MLflow, so a dead server costs a few failed requests, not one per epoch.
Each failed request takes MLflow's retry budget (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``): minutes
with MLflow's defaults, so lower them where training must not wait.
`MLflowCallback` is the fastai side: per-epoch losses, every Recorder metric and the
learning rate, also kept in memory (`MLflowCallback.history`) for the curves plot.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import mlflow
from fastai.callback.core import Callback
from fastai.learner import Recorder
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from bcdiag.errors import BcdiagError

logger = logging.getLogger(__name__)


class TrackingWarning(UserWarning):
    """MLflow tracking failed; the work it was tracking went on."""


class Tracker:
    """Contained MLflow logging to one run.

    Args:
        run_id: the run to log to; default the active run when the first call is made.
        tracking_uri: the tracking server; default MLflow's current tracking URI.
        max_failures: failed calls after which the tracker stops calling MLflow.
    """

    def __init__(
        self, run_id: str | None = None, tracking_uri: str | None = None, max_failures: int = 3
    ) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.max_failures = max_failures
        self.failures = 0

    @property
    def enabled(self) -> bool:
        """Whether calls still go to MLflow."""
        return self.failures < self.max_failures

    def log_params(self, params: Mapping[str, Any]) -> bool:
        """Log parameters (values as strings); returns whether MLflow took them."""
        items = [Param(key, str(value)) for key, value in params.items()]
        return self._call("log params", lambda client, run: client.log_batch(run, params=items))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> bool:
        """Log metrics at `step` (non-finite values are skipped); returns success."""
        stamp = int(time.time() * 1000)
        items = [
            Metric(key, float(value), stamp, step)
            for key, value in metrics.items()
            if math.isfinite(value)
        ]
        return self._call("log metrics", lambda client, run: client.log_batch(run, metrics=items))

    def log_figure(self, figure: Any, name: str) -> bool:
        """Log a matplotlib figure as the artifact `name` (e.g. ``"roc.png"``)."""
        return self._call(
            f"log figure {name}", lambda client, run: client.log_figure(run, figure, name)
        )

    def _call(self, what: str, action: Callable[[Any, str], object]) -> bool:
        if not self.enabled:
            return False
        try:
            run_id = self._resolve_run_id()
            action(MlflowClient(self.tracking_uri), run_id)
        # Any failure: tracking must never end the work it tracks (see module docstring).
        except Exception as error:  # noqa: BLE001
            self._report(what, error)
            return False
        return True

    def _resolve_run_id(self) -> str:
        if self.run_id is None:
            run = mlflow.active_run()
            if run is None:
                raise BcdiagError("no active MLflow run: call mlflow.start_run() or pass run_id")
            self.run_id = run.info.run_id
        return self.run_id

    def _report(self, what: str, error: Exception) -> None:
        self.failures += 1
        logger.warning("MLflow %s failed (%d so far)", what, self.failures, exc_info=error)
        if self.failures == 1:
            warnings.warn(
                f"MLflow tracking failed ({what}: {error}); the work continues, "
                f"and tracking stops after {self.max_failures} failures",
                TrackingWarning,
                stacklevel=4,
            )
        if not self.enabled:
            logger.warning("MLflow tracking switched off after %d failures", self.failures)


class MLflowCallback(Callback):  # type: ignore[misc]  # fastai is untyped
    """Logs each epoch's losses, Recorder metrics and learning rate to MLflow.

    The step is the epoch, counted on across fits: pass the same callback to each
    ensemble member's Learner and member ``m`` of ``E``-epoch members logs steps
    ``m*E .. m*E+E-1``, so every metric stays one series.

    Args:
        tracker: where to log; default a `Tracker` on the run active at the first epoch.
    """

    order = Recorder.order + 1  # after the Recorder has stored the epoch's values

    def __init__(self, tracker: Tracker | None = None) -> None:
        super().__init__()
        self.tracker = tracker if tracker is not None else Tracker()
        self.history: list[dict[str, float]] = []

    def after_epoch(self) -> None:
        """Record the epoch in `history` and send it to MLflow."""
        record = self.learn.final_record
        names = self.learn.recorder.metric_names[1 : len(record) + 1]
        values = {
            name: float(value)
            for name, value in zip(names, record, strict=True)
            if value is not None
        }
        values["lr"] = float(self.learn.opt.hypers[-1]["lr"])
        step = len(self.history)
        self.history.append({"epoch": step, **values})
        self.tracker.log_metrics(values, step=step)
