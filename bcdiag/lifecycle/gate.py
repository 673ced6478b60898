"""The retraining gate: a challenger replaces the champion only if it is no worse.

Both models score the modality's locked test set (`bcdiag.lifecycle.retrain_data`), each at its
own threshold, chosen on its own validation data. The challenger passes when

- the lower bound of the 95% DeLong interval of AUC(challenger) − AUC(champion) is
  above −``gate_auc_margin`` (non-inferiority), and
- its sensitivity is at least the champion's − ``gate_sensitivity_margin``, and
- its specificity is at least the champion's − ``gate_specificity_margin`` (looser:
  a false alarm costs a recall, a missed cancer costs more), unless its sensitivity
  gained at least what its specificity lost (a move along the ROC curve, not a loss).

With no champion it passes when its own AUC's lower bound is above 0.5 (better than
chance). `judge` is pure; `evaluate_challenger` loads the models and the data;
`record_decision` writes the decision to MLflow and the audit trail;
`promote_if_passes` does all three and moves ``champion`` — the one gated way a
champion changes, for the retraining cycle and ``bcdiag promote`` alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mlflow import MlflowClient

from bcdiag.datasets.catalog import SAME_IMAGES
from bcdiag.errors import BcdiagError
from bcdiag.lifecycle.retrain_data import locked_test_set
from bcdiag.models.champion_trail import target
from bcdiag.models.metrics import (
    AucDifference,
    AucEstimate,
    auc_with_ci,
    operating_point,
    paired_auc_difference,
)
from bcdiag.models.registry import champion, load_version, set_champion, version_info
from bcdiag.settings import Settings
from bcdiag.storage import Storage

PROMOTED, REJECTED = "promoted", "rejected"
CHANCE_AUC = 0.5


@dataclass(frozen=True)
class Margins:
    """How much worse than the champion a challenger may be (see the settings)."""

    auc: float = 0.02
    sensitivity: float = 0.05
    specificity: float = 0.10

    @classmethod
    def from_settings(cls, settings: Settings) -> Margins:
        """The margins configured in `settings`."""
        return cls(
            settings.gate_auc_margin,
            settings.gate_sensitivity_margin,
            settings.gate_specificity_margin,
        )


@dataclass(frozen=True)
class Scores:
    """One model's probabilities on the locked test set and its own threshold."""

    version: str
    probabilities: npt.NDArray[np.floating[Any]]
    threshold: float


@dataclass(frozen=True)
class ModelFigures:
    """One model on the locked test set: AUC with its 95% interval, operating point."""

    version: str
    auc: AucEstimate
    threshold: float
    sensitivity: float
    specificity: float


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict, with every figure it rests on."""

    decision: str
    reason: str
    challenger: ModelFigures
    champion: ModelFigures | None
    difference: AucDifference | None
    margins: Margins
    n_test: int
    n_positive: int

    @property
    def promoted(self) -> bool:
        """Whether the challenger passed."""
        return self.decision == PROMOTED

    def metrics(self) -> dict[str, float]:
        """Flat figures for ``mlflow.log_metrics`` (``gate_challenger_auc_low`` …)."""
        values: dict[str, float] = {
            "gate_n_test": self.n_test,
            "gate_n_positive": self.n_positive,
            "gate_promoted": float(self.promoted),
        }
        for role, figures in (("challenger", self.challenger), ("champion", self.champion)):
            if figures is not None:
                values.update(
                    {
                        f"gate_{role}_auc": figures.auc.auc,
                        f"gate_{role}_auc_low": figures.auc.low,
                        f"gate_{role}_auc_high": figures.auc.high,
                        f"gate_{role}_sensitivity": figures.sensitivity,
                        f"gate_{role}_specificity": figures.specificity,
                    }
                )
        if self.difference is not None:
            values.update(
                {
                    "gate_auc_difference": self.difference.delta,
                    "gate_auc_difference_low": self.difference.low,
                    "gate_auc_difference_high": self.difference.high,
                }
            )
        return {key: float(value) for key, value in values.items()}

    def as_json(self) -> dict[str, Any]:
        """Everything as one JSON-safe object."""
        return asdict(self)


def figures(y: npt.ArrayLike, scores: Scores) -> ModelFigures:
    """AUC (95% DeLong interval) and the operating point at the model's own threshold."""
    point = operating_point(y, scores.probabilities, scores.threshold)
    return ModelFigures(
        scores.version,
        auc_with_ci(y, scores.probabilities),
        scores.threshold,
        point.sensitivity,
        point.specificity,
    )


def judge(
    y: npt.ArrayLike, challenger: Scores, champion: Scores | None, margins: Margins
) -> GateDecision:
    """Decide on constructed or real scores of the same locked test cases `y`."""
    labels = np.asarray(y)
    new = figures(labels, challenger)
    n, n_positive = int(labels.size), int(labels.sum())
    auc = f"AUC {_auc(new.auc)}"
    if champion is None:
        passed = new.auc.low > CHANCE_AUC
        verdict = "above" if passed else "not above"
        reason = (
            f"no champion yet: the challenger's {auc} has its lower bound {verdict} "
            f"{CHANCE_AUC} (chance)"
        )
        decision = PROMOTED if passed else REJECTED
        return GateDecision(decision, reason, new, None, None, margins, n, n_positive)
    old = figures(labels, champion)
    difference = paired_auc_difference(labels, challenger.probabilities, champion.probabilities)
    auc_ok = difference.low > -margins.auc
    sensitivity_ok = new.sensitivity >= old.sensitivity - margins.sensitivity - 1e-12
    specificity_lost = old.specificity - new.specificity
    specificity_within = specificity_lost <= margins.specificity + 1e-12
    offset = new.sensitivity - old.sensitivity >= specificity_lost - 1e-12
    specificity_ok = specificity_within or offset
    parts = [
        f"AUC {new.auc.auc:.3f} vs {old.auc.auc:.3f}, difference {difference.delta:+.3f} "
        f"[{difference.low:+.3f}, {difference.high:+.3f}]: lower bound "
        f"{'above' if auc_ok else 'not above'} -{margins.auc}",
        f"sensitivity {new.sensitivity:.3f} vs {old.sensitivity:.3f} "
        f"{'within' if sensitivity_ok else 'more than'} {margins.sensitivity} below",
        f"specificity {new.specificity:.3f} vs {old.specificity:.3f} "
        + (
            f"within {margins.specificity} below"
            if specificity_within
            else f"more than {margins.specificity} below, "
            + ("offset by the sensitivity gained" if offset else "not offset by sensitivity")
        ),
    ]
    passed = auc_ok and sensitivity_ok and specificity_ok
    reason = f"{'non-inferior' if passed else 'rejected'}: {'; '.join(parts)}"
    decision = PROMOTED if passed else REJECTED
    return GateDecision(decision, reason, new, old, difference, margins, n, n_positive)


def evaluate_challenger(
    name: str,
    challenger_version: str,
    champion_version: str | None,
    data_dir: Path,
    settings: Settings,
) -> GateDecision:
    """Score both registered versions on the locked test set of their modality and judge.

    Each model sees the set prepared at its own input size; the cases are the same.
    """
    challenger, labels = _locked_scores(name, challenger_version, data_dir, settings)
    incumbent = None
    if champion_version is not None:
        incumbent = _locked_scores(name, champion_version, data_dir, settings)[0]
    return judge(labels, challenger, incumbent, Margins.from_settings(settings))


def promote_if_passes(
    name: str, version: str, *, data_dir: Path, settings: Settings, storage: Storage, user: str
) -> GateDecision:
    """Judge `version` against the current champion, record the decision, promote if it passes.

    Raises:
        BcdiagError: `version` is already the champion, or was not logged by an MLflow run.
    """
    candidate, current = version_info(name, version), champion(name)
    if current is not None and current.version == candidate.version:
        raise BcdiagError(f"{name} version {candidate.version} is already the champion")
    if candidate.run_id is None:
        raise BcdiagError(f"{name} version {candidate.version} has no MLflow run to record in")
    faced = None if current is None else current.version
    decision = evaluate_challenger(name, candidate.version, faced, data_dir, settings)
    record_decision(decision, name=name, run_id=candidate.run_id, storage=storage, user=user)
    if decision.promoted:
        set_champion(name, candidate.version)
    return decision


def _locked_scores(
    name: str, version: str, data_dir: Path, settings: Settings
) -> tuple[Scores, npt.NDArray[np.int64]]:
    bundle, _ = load_version(name, version)
    test = locked_test_set(bundle.modality, data_dir, bundle.image_size, settings)
    trained_on = bundle.info.get("dataset")
    if SAME_IMAGES.get(str(trained_on)) == test.name:
        raise BcdiagError(
            f"{name} version {version} was trained on {trained_on}, which is made from the "
            f"same images as the locked test set ({test.name}): the gate would score images "
            f"the model trained on. Train it on {test.name} (its fixed split keeps the test "
            "images out) and gate that version."
        )
    probabilities = np.array(
        [scored.probability for scored in bundle.score_prepared(test.x)], dtype=np.float64
    )
    return Scores(version, probabilities, bundle.operating_point.threshold), test.y


def record_decision(
    decision: GateDecision, *, name: str, run_id: str, storage: Storage, user: str
) -> None:
    """Log the decision to the challenger's MLflow run and to the audit trail."""
    client = MlflowClient()
    for key, value in decision.metrics().items():
        client.log_metric(run_id, key, value)
    client.set_tag(run_id, "gate_decision", decision.decision)
    client.set_tag(run_id, "gate_reason", decision.reason[:5000])
    client.log_text(run_id, json.dumps(decision.as_json(), indent=2), "gate.json")
    storage.record_audit(
        user=user,
        action=f"model.{decision.decision}",
        target=target(name, decision.challenger.version),  # what champion_trail reads
        details={
            "run_id": run_id,
            "champion_version": None if decision.champion is None else decision.champion.version,
            "reason": decision.reason,
            **decision.metrics(),
        },
    )


def _auc(estimate: AucEstimate) -> str:
    return f"{estimate.auc:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"
