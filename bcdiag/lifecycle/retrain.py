"""A retraining cycle: per modality, train a challenger, gate it, move the champion.

For each modality: skip it (with the reason) when its base data set is missing;
run ``notebooks/retrain.ipynb`` through papermill as one MLflow run — it trains
on the base data plus the clinician-confirmed scans (`bcdiag.lifecycle.retrain_data`) with
`bcdiag.lifecycle.training_run.run_training`, as `bcdiag train` does, and registers the
challenger; judge it against the champion on the locked test set (`bcdiag.lifecycle.gate`);
record the decision in MLflow and the audit trail; and only then move ``champion``
(the replaced one keeps ``previous-champion``). A failure leaves the champion where
it was, marks the run FAILED and writes a ``retrain.failed`` audit event. A lock
file under ``BCDIAG_HOME`` keeps two cycles from ever running at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from mlflow import MlflowClient

from bcdiag.errors import BcdiagError
from bcdiag.lifecycle.gate import GateDecision, promote_if_passes
from bcdiag.lifecycle.notebook_runs import run_notebook
from bcdiag.lifecycle.retrain_data import BASE_DATASETS, missing_base_data
from bcdiag.models.recipe import Recipe, recipe_for
from bcdiag.models.registry import champion, model_name_for, version_of_run
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage

LOCK_FILE = "retrain.lock"
EXPERIMENT = "bcdiag-retrain"
FAILED, SKIPPED = "failed", "skipped"


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
        overrides: recipe fields (e.g. ``epochs``) replacing the data set's recipe and
            the ``retrain_recipe`` setting; None values are ignored.
        data_dir: base data sets; default `Settings.base_data_dir`.
        user: who started it, for the audit trail.

    Raises:
        CycleRunning: another cycle is running; nothing was done.
        RecipeError: the setting or `overrides` name an unknown field or a wrong value;
            nothing was done.
    """
    settings = get_settings()
    folder = data_dir or settings.base_data_dir
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    chosen = modalities or settings.retrain_modalities
    recipes = {modality: cycle_recipe(modality, settings, given) for modality in chosen}
    with cycle_lock(settings), Storage.from_settings(settings) as storage:
        return [
            _cycle(modality, folder, storage, settings, recipes[modality], user, experiment)
            for modality in chosen
        ]


def cycle_recipe(
    modality: str,
    settings: Settings,
    overrides: Mapping[str, Any],
    source: str = "bcdiag retrain options",
) -> Recipe:
    """The modality's public data set's recipe (also for a site's own folder), with the
    ``retrain_recipe`` setting and then `overrides` (from `source`) replacing fields."""
    dataset = BASE_DATASETS.get(modality, modality)
    recipe = recipe_for(dataset, settings.retrain_recipe, source="BCDIAG_RETRAIN_RECIPE")
    return Recipe.parse(overrides, source, base=recipe)


def _cycle(
    modality: str,
    data_dir: Path | None,
    storage: Storage,
    settings: Settings,
    recipe: Recipe,
    user: str,
    experiment: str,
) -> CycleOutcome:
    name = model_name_for(modality)
    missing = missing_base_data(modality, data_dir, settings)
    if missing is not None or data_dir is None:
        return CycleOutcome(name, modality, SKIPPED, f"skipped: {missing}")
    current = champion(name)
    faced = None if current is None else current.version
    outcome = CycleOutcome(name, modality, FAILED, "", champion_version=faced)
    try:
        outcome = _challenge(outcome, data_dir, recipe, experiment)
        return _decide(outcome, data_dir, storage, settings, user)
    except Exception as error:
        _record_failure(outcome, error, storage, user)
        if isinstance(error, BcdiagError):
            return replace(outcome, reason=f"failed: {error}")
        raise


def _challenge(
    outcome: CycleOutcome, data_dir: Path, recipe: Recipe, experiment: str
) -> CycleOutcome:
    parameters = {
        "modality": outcome.modality,
        "recipe": recipe.as_dict(),
        "data_dir": str(data_dir),
    }
    run_name = f"retrain-{outcome.modality}"
    run_id = run_notebook("retrain", parameters, experiment=experiment, run_name=run_name)
    outcome = replace(outcome, run_id=run_id)
    return replace(outcome, challenger_version=version_of_run(outcome.model, run_id))


def _decide(
    outcome: CycleOutcome, data_dir: Path, storage: Storage, settings: Settings, user: str
) -> CycleOutcome:
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
