"""Figures for model evaluation: ROC, confusion matrix, calibration, training curves.

Each function builds a `matplotlib.figure.Figure` directly, without pyplot, so
no global figure state leaks and nothing is shown: a notebook displays the
returned figure, a pipeline saves it (``fig.savefig``) or logs it
(``mlflow.log_figure``). Saving to PNG renders with Agg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from bcdiag.models.metrics import (
    OperatingPoint,
    auc_with_ci,
    brier_score,
    calibration_bins,
    expected_calibration_error,
)

Curve = tuple[npt.ArrayLike, npt.ArrayLike]  # (y, p)


def roc_figure(
    curves: Mapping[str, Curve],
    operating_points: Mapping[str, OperatingPoint] | None = None,
) -> Figure:
    """ROC curves, one per name, with AUC and 95% DeLong CI in the legend.

    Args:
        curves: name → (labels, probabilities).
        operating_points: name → operating point to mark on that name's curve.
    """
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, (y, p) in curves.items():
        auc = auc_with_ci(y, p)
        fpr, tpr, _ = roc_curve(np.asarray(y), np.asarray(p))
        (line,) = ax.plot(
            fpr, tpr, label=f"{name}: AUC {auc.auc:.3f} [{auc.low:.3f}, {auc.high:.3f}]"
        )
        op = (operating_points or {}).get(name)
        if op is not None:
            ax.plot(
                1 - op.specificity,
                op.sensitivity,
                marker="o",
                linestyle="none",
                color=line.get_color(),
                label=f"{name} @ p ≥ {op.threshold:.3f}",
            )
    ax.set(
        xlabel="1 − specificity (false-positive rate)",
        ylabel="sensitivity (true-positive rate)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        aspect="equal",
    )
    ax.legend(loc="lower right", fontsize="small")
    return fig


def confusion_figure(op: OperatingPoint, title: str = "") -> Figure:
    """2×2 confusion matrix of counts: truth in rows, prediction in columns."""
    counts = np.array([[op.tp, op.fn], [op.fp, op.tn]])
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues", vmin=0)
    for (row, col), count in np.ndenumerate(counts):
        dark = count > counts.max() / 2
        ax.text(col, row, str(count), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks([0, 1], ["suspicious", "not suspicious"])
    ax.set_yticks([0, 1], ["malignant", "not malignant"])
    ax.set(xlabel=f"prediction (suspicious: p ≥ {op.threshold:.3f})", ylabel="truth", title=title)
    return fig


def calibration_figure(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> Figure:
    """Reliability diagram over equal-width bins above a histogram of p by class."""
    mean_p, observed, count = calibration_bins(y, p, n_bins)
    labels, scores = np.asarray(y), np.asarray(p, dtype=np.float64)
    fig = Figure(figsize=(5, 6), layout="constrained")
    reliability, histogram = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    reliability.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    filled = count > 0
    reliability.plot(
        mean_p[filled],
        observed[filled],
        marker="o",
        label=f"model (ECE {expected_calibration_error(y, p, n_bins):.3f}, "
        f"Brier {brier_score(y, p):.3f})",
    )
    reliability.set(ylabel="observed malignancy rate", xlim=(0, 1), ylim=(0, 1))
    reliability.legend(loc="upper left", fontsize="small")
    histogram.hist(
        [scores[labels == 0], scores[labels == 1]],
        bins=np.linspace(0, 1, n_bins + 1),
        stacked=True,
        label=["not malignant", "malignant"],
    )
    histogram.set(xlabel="predicted probability of malignancy", ylabel="cases")
    histogram.legend(fontsize="small")
    return fig


def training_curves_figure(history: Sequence[Mapping[str, float]]) -> Figure:
    """Losses (keys ending in ``loss``) and other metrics per epoch, side by side.

    Args:
        history: one mapping per epoch; x is its ``epoch`` value, else its position.
            A key missing from an epoch leaves a gap.

    Raises:
        ValueError: there is nothing but ``epoch`` to plot.
    """
    keys = list(dict.fromkeys(key for row in history for key in row if key != "epoch"))
    if not keys:
        raise ValueError("history has no values to plot; pass one dict per epoch")
    x = [row.get("epoch", index) for index, row in enumerate(history)]
    losses = [key for key in keys if key.endswith("loss")]
    metrics = [key for key in keys if key not in losses]
    panels = [(group, label) for group, label in ((losses, "loss"), (metrics, "metric")) if group]
    fig = Figure(figsize=(5 * len(panels), 3.5), layout="constrained")
    for ax, (group, ylabel) in zip(
        fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        for key in group:
            ax.plot(x, [row.get(key, np.nan) for row in history], marker=".", label=key)
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.legend(fontsize="small")
    return fig
