"""A retraining cycle: per modality, train a challenger, gate it, move the champion.

For each modality: skip it (with the reason) when its base data set is missing;
run ``notebooks/retrain.ipynb`` through papermill as one MLflow run — it calls
`train_challenger`, which trains on the base data plus the clinician-confirmed
scans (`bcdiag.retrain_data`) and registers the challenger; judge it against the
champion on the locked test set (`bcdiag.gate`); record the decision in MLflow and
the audit trail; and only then move ``champion`` (the replaced one keeps
``previous-champion``). A failure leaves the champion where it was, marks the run
FAILED and writes a ``retrain.failed`` audit event. A lock file under
``BCDIAG_HOME`` keeps two cycles from ever running at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bcdiag.errors import BcdiagError
from bcdiag.gate import GateDecision
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage

if TYPE_CHECKING:
    from bcdiag.pipeline import TrainingResult
    from bcdiag.train import TrainConfig

LOCK_FILE = "retrain.lock"
EXPERIMENT = "bcdiag-retrain"
FAILED, SKIPPED = "failed", "skipped"
_NOTEBOOK_PARAMETERS = (
    "architecture", "image_size", "epochs", "members", "batch_size", "lr", "seed",
    "threshold_rule",
)  # fmt: skip


class CycleRunning(BcdiagError):
    """Another retraining cycle holds the lock."""


@dataclass(frozen=True)
class CycleOutcome:
    """What one modality's cycle did; ``champion_version`` is the champion it faced."""

    model: str
    modality: str
    decision: str
    reason: str
    challenger_version: str | None = None
    champion_version: str | None = None
    run_id: str | None = None
    gate: GateDecision | None = None

    def as_json(self) -> dict[str, Any]:
        """One flat JSON object (``bcdiag retrain --json`` prints one per modality)."""
        figures = {} if self.gate is None else self.gate.metrics()
        return {
            "model": self.model,
            "modality": self.modality,
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            "decision": self.decision,
            "reason": self.reason,
            "run_id": self.run_id,
            **{k.removeprefix("gate_"): v for k, v in figures.items() if k != "gate_promoted"},
        }


@contextmanager
def cycle_lock(settings: Settings) -> Iterator[None]:
    """Hold the cycle lock; `CycleRunning` at once if another process or thread holds it."""
    from filelock import FileLock, Timeout

    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / LOCK_FILE
    lock = FileLock(path, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout as error:
        raise CycleRunning(f"a retraining cycle is already running (lock {path})") from error
    try:
        yield
    finally:
        lock.release()


def train_challenger(
    modality: str,
    config: TrainConfig,
    *,
    data_dir: Path,
    experiment: str = EXPERIMENT,
    run_id: str | None = None,
    use_confirmed: bool = True,
) -> TrainingResult:
    """Train, evaluate, log and register a challenger (the retraining notebook's call).

    Args:
        use_confirmed: add the clinician-confirmed scans from storage to ``train``.
    """
    import time

    import mlflow

    from bcdiag.pipeline import TrainingResult, evaluate_bundle, log_evaluation
    from bcdiag.registry import log_bundle
    from bcdiag.retrain_data import (
        FeedbackCounts,
        base_dataset,
        confirmed_set,
        load_base,
        retraining_set,
    )
    from bcdiag.tracking import MLflowCallback
    from bcdiag.train import train_bundle

    start = time.perf_counter()
    settings = get_settings()
    dataset = base_dataset(modality, settings)
    base = load_base(modality, data_dir, config.image_size, settings, config.seed)
    confirmed, counts = base.subset(np.zeros(len(base), dtype=bool)), FeedbackCounts()  # none
    if use_confirmed:
        with Storage.from_settings(settings) as storage:
            confirmed, counts = confirmed_set(storage, modality, config.image_size)
    images, counts = retraining_set(base, confirmed, counts)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"retrain-{modality}"):
        mlflow.log_params({"dataset": dataset, "modality": modality, **config.as_params()})
        mlflow.log_params({f"n_{s}": int((images.split == s).sum()) for s in ("train", "valid")})
        mlflow.log_params({"n_test_locked": int((images.split == "test").sum())})
        mlflow.log_params({f"confirmed_{k}": v for k, v in asdict(counts).items()})
        callback = MLflowCallback()
        bundle = train_bundle(images, config, cbs=[callback])
        evaluations = evaluate_bundle(bundle, images)
        log_evaluation(bundle, images, evaluations, callback.history)
        registered = log_bundle(bundle)
        seconds = time.perf_counter() - start
        mlflow.log_metric("train_seconds", seconds)
    return TrainingResult(registered.run_id, bundle, evaluations, registered, seconds)


def run_cycle(
    *,
    modalities: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    data_dir: Path | None = None,
    user: str = "scheduler",
    experiment: str = EXPERIMENT,
) -> list[CycleOutcome]:
    """One cycle over `modalities` (default: the ``retrain_modalities`` setting).

    Args:
        overrides: recipe values (e.g. ``epochs``) replacing the data set's recipe and
            the ``retrain_recipe`` setting; None values are ignored.
        data_dir: base data sets; default `Settings.base_data_dir`.
        user: who started it, for the audit trail.

    Raises:
        CycleRunning: another cycle is running; nothing was done.
    """
    settings = get_settings()
    folder = data_dir or settings.base_data_dir
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    recipe = {**settings.retrain_recipe, **given}
    with cycle_lock(settings), Storage.from_settings(settings) as storage:
        return [
            _cycle(modality, folder, storage, settings, recipe, user, experiment)
            for modality in (modalities or settings.retrain_modalities)
        ]


def _cycle(
    modality: str,
    data_dir: Path | None,
    storage: Storage,
    settings: Settings,
    overrides: dict[str, Any],
    user: str,
    experiment: str,
) -> CycleOutcome:
    from bcdiag.registry import champion, model_name_for
    from bcdiag.retrain_data import missing_base_data

    name = model_name_for(modality)
    missing = missing_base_data(modality, data_dir, settings)
    if missing is not None or data_dir is None:
        return CycleOutcome(name, modality, SKIPPED, f"skipped: {missing}")
    current = champion(name)
    faced = None if current is None else current.version
    outcome = CycleOutcome(name, modality, FAILED, "", champion_version=faced)
    try:
        outcome = _challenge(outcome, data_dir, overrides, experiment)
        return _decide(outcome, data_dir, storage, settings, user)
    except Exception as error:
        _record_failure(outcome, error, storage, user)
        if isinstance(error, BcdiagError):
            return replace(outcome, reason=f"failed: {error}")
        raise


def _challenge(
    outcome: CycleOutcome,
    data_dir: Path,
    overrides: dict[str, Any],
    experiment: str,
) -> CycleOutcome:
    from bcdiag.notebook_runs import run_notebook
    from bcdiag.registry import version_of_run
    from bcdiag.retrain_data import BASE_DATASETS
    from bcdiag.train import recipe_for

    # The recipe of the modality's public set, also for a site's own folder.
    config = recipe_for(BASE_DATASETS[outcome.modality], **overrides)
    parameters = {
        "modality": outcome.modality,
        **{k: v for k, v in config.as_params().items() if k in _NOTEBOOK_PARAMETERS},
        "data_dir": str(data_dir),
    }
    run_name = f"retrain-{outcome.modality}"
    run_id = run_notebook("retrain", parameters, experiment=experiment, run_name=run_name)
    outcome = replace(outcome, run_id=run_id)
    return replace(outcome, challenger_version=version_of_run(outcome.model, run_id))


def _decide(
    outcome: CycleOutcome, data_dir: Path, storage: Storage, settings: Settings, user: str
) -> CycleOutcome:
    from bcdiag.gate import promote_if_passes

    if outcome.run_id is None or outcome.challenger_version is None:
        raise BcdiagError("the challenger was not registered")
    decision = promote_if_passes(
        outcome.model,
        outcome.challenger_version,
        data_dir=data_dir,
        settings=settings,
        storage=storage,
        user=user,
    )
    return replace(outcome, decision=decision.decision, reason=decision.reason, gate=decision)


def _record_failure(
    outcome: CycleOutcome, error: BaseException, storage: Storage, user: str
) -> None:
    from mlflow import MlflowClient

    if outcome.run_id is not None:
        MlflowClient().set_terminated(outcome.run_id, "FAILED")
    storage.record_audit(
        user=user,
        action="retrain.failed",
        target=f"model:{outcome.model}",
        details={
            "error": f"{type(error).__name__}: {error}"[:2000],
            "run_id": outcome.run_id,
            "challenger_version": outcome.challenger_version,
            "champion_version": outcome.champion_version,
        },
    )
