"""Figures: the right artists, the right labels, and they save to PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import special

from bcdiag.models.metrics import auc_with_ci, operating_point
from bcdiag.models.plots import (
    calibration_figure,
    confusion_figure,
    roc_figure,
    training_curves_figure,
)

rng = np.random.default_rng(0)
Y = (rng.random(200) < 0.3).astype(np.int64)
P = special.expit(rng.normal(size=200) + 1.5 * Y - 1)


def legend_texts(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [text.get_text() for text in legend.get_texts()]


def xy(line: Line2D) -> tuple[list[float], list[float]]:
    return list(np.asarray(line.get_xdata())), list(np.asarray(line.get_ydata()))


def saves_png(fig: Figure, path: Path) -> bool:
    fig.savefig(path, dpi=40)
    return path.read_bytes().startswith(b"\x89PNG")


def test_roc_figure_legend_and_operating_point(tmp_path: Path) -> None:
    op = operating_point(Y, P, 0.4)
    fig = roc_figure({"new": (Y, P), "old": (Y, P**3)}, {"new": op})
    (ax,) = fig.axes
    assert len(ax.lines) == 4  # chance, two curves, one operating point
    legend = legend_texts(ax)
    auc = auc_with_ci(Y, P)
    assert f"new: AUC {auc.auc:.3f} [{auc.low:.3f}, {auc.high:.3f}]" in legend
    assert sum("AUC" in label for label in legend) == 2
    (marker,) = [line for line in ax.lines if line.get_label() == "new @ p ≥ 0.400"]
    x, y = xy(marker)
    assert x == pytest.approx([1 - op.specificity])
    assert y == pytest.approx([op.sensitivity])
    assert saves_png(fig, tmp_path / "roc.png")


def test_confusion_figure_counts_and_labels(tmp_path: Path) -> None:
    op = operating_point([1, 1, 1, 0, 0, 0, 0, 1], [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.5, 0.5], 0.5)
    fig = confusion_figure(op, "test set")
    (ax,) = fig.axes
    assert [text.get_text() for text in ax.texts] == ["3", "1", "2", "2"]  # tp fn / fp tn
    assert [t.get_text() for t in ax.get_xticklabels()] == ["suspicious", "not suspicious"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["malignant", "not malignant"]
    assert ax.get_title() == "test set"
    assert saves_png(fig, tmp_path / "confusion.png")


def test_calibration_figure_has_reliability_and_histogram(tmp_path: Path) -> None:
    fig = calibration_figure(Y, P, n_bins=5)
    reliability, histogram = fig.axes
    assert len(reliability.lines) == 2  # diagonal and model
    assert 1 < len(xy(reliability.lines[1])[0]) <= 5  # non-empty bins only
    assert "ECE" in legend_texts(reliability)[1]
    assert len(histogram.patches) == 10  # 5 bins × 2 classes
    assert saves_png(fig, tmp_path / "calibration.png")


def test_training_curves_split_losses_from_metrics(tmp_path: Path) -> None:
    history = [
        {"epoch": 0, "train_loss": 0.7, "valid_loss": 0.69, "valid_auc": 0.6},
        {"epoch": 1, "train_loss": 0.5, "valid_loss": 0.55},
        {"epoch": 2, "train_loss": 0.4, "valid_loss": 0.5, "valid_auc": 0.8},
    ]
    fig = training_curves_figure(history)
    losses, metrics = fig.axes
    assert [line.get_label() for line in losses.lines] == ["train_loss", "valid_loss"]
    (auc,) = metrics.lines
    x, y = xy(auc)
    assert x == [0, 1, 2]
    assert np.isnan(y[1])  # a missing epoch is a gap
    assert saves_png(fig, tmp_path / "training.png")


def test_training_curves_plot_only_what_is_present() -> None:
    fig = training_curves_figure([{"train_loss": 0.7}, {"train_loss": 0.6}])
    (ax,) = fig.axes
    assert xy(ax.lines[0])[0] == [0, 1]
    with pytest.raises(ValueError, match="no values to plot"):
        training_curves_figure([{"epoch": 0}])
