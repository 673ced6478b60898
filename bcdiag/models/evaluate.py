"""One evaluation of a model on one labelled set, ready for MLflow and for reading.

`evaluate` bundles the metrics of `bcdiag.models.metrics` at a threshold that was
chosen beforehand on validation data; `Evaluation.as_dict` flattens them for
``mlflow.log_metrics`` and `format_table` lays several side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from bcdiag.models.metrics import (
    AucEstimate,
    OperatingPoint,
    auc_with_ci,
    brier_score,
    expected_calibration_error,
    operating_point,
)


@dataclass(frozen=True)
class Evaluation:
    """Discrimination, operating point and calibration of one model on one set."""

    name: str
    auc: AucEstimate
    operating_point: OperatingPoint
    brier: float
    ece: float
    n: int
    n_positive: int

    def as_dict(self, prefix: str | None = None) -> dict[str, float]:
        """Flat float metrics keyed ``{prefix}_{metric}``, e.g. ``test_auc_low``.

        Args:
            prefix: key prefix; defaults to the evaluation's name.
        """
        values = {
            "auc": self.auc.auc,
            "auc_low": self.auc.low,
            "auc_high": self.auc.high,
            **asdict(self.operating_point),
            "brier": self.brier,
            "ece": self.ece,
            "n": self.n,
            "n_positive": self.n_positive,
        }
        stem = self.name if prefix is None else prefix
        return {f"{stem}_{key}": float(value) for key, value in values.items()}


def evaluate(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float, *, name: str) -> Evaluation:
    """Evaluate probabilities ``p`` against labels ``y`` at a pre-chosen ``threshold``.

    AUC has a 95% DeLong interval; ECE uses 10 equal-width bins.

    Raises:
        ValueError: invalid input, or fewer than two cases of either class.
    """
    auc = auc_with_ci(y, p)
    labels = np.asarray(y)
    return Evaluation(
        name=name,
        auc=auc,
        operating_point=operating_point(y, p, threshold),
        brier=brier_score(y, p),
        ece=expected_calibration_error(y, p),
        n=int(labels.size),
        n_positive=int(labels.sum()),
    )


def format_table(evaluations: list[Evaluation]) -> str:
    """A plain-text table, one row per evaluation, for logs and notebooks.

    Raises:
        ValueError: the evaluations' AUC intervals have different confidence levels.
    """
    levels = {e.auc.level for e in evaluations}
    if len(levels) > 1:
        raise ValueError(f"cannot tabulate mixed confidence levels {sorted(levels)}")
    level = levels.pop() if levels else 0.95
    name_width = max([4, *(len(e.name) for e in evaluations)])
    header = (
        f"{'name':<{name_width}} {'n':>6} {'pos':>6}  {f'AUC [{level:.0%} CI]':<21} "
        f"{'acc':>6} {'sens':>6} {'spec':>6} {'Brier':>6} {'ECE':>6}"
    )
    rows = [header, "-" * len(header)]
    for e in evaluations:
        op = e.operating_point
        auc = f"{e.auc.auc:.3f} [{e.auc.low:.3f}, {e.auc.high:.3f}]"
        rows.append(
            f"{e.name:<{name_width}} {e.n:>6} {e.n_positive:>6}  {auc:<21} "
            f"{op.accuracy:>6.3f} {op.sensitivity:>6.3f} {op.specificity:>6.3f} "
            f"{e.brier:>6.3f} {e.ece:>6.3f}"
        )
    return "\n".join(rows)
