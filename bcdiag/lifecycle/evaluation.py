"""Evaluating a trained bundle on an image set: image- and patient-level figures, plots.

Each part of the set is scored once (`score_parts`) and every figure and plot is drawn from
those scores, at the threshold the bundle chose on its own validation data:

- the model's own set: ``valid`` and ``test``; for ultrasound also ``test_dedup`` (BUSI
  repeats frames across its splits: test without near-duplicates of training images);
- another set (external validation): every image, as ``external``;
- wherever patients have several images, also ``<part>_patient``: the maximum score over
  each patient's images against whether the patient has a malignant image — what a
  screening reader decides on (flagged when any image is).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
from numpy.typing import NDArray

from bcdiag.datasets import ImageSet, near_duplicates_of_train
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.evaluate import Evaluation, evaluate, format_table
from bcdiag.models.plots import (
    calibration_figure,
    confusion_figure,
    roc_figure,
    training_curves_figure,
)

PATIENT_SUFFIX = "_patient"


@dataclass(frozen=True)
class PartScores:
    """One evaluated part: labels, calibrated probabilities and the patient of each image."""

    name: str
    y: NDArray[np.int64]
    p: NDArray[np.float32]
    groups: list[str]

    def per_patient(self) -> PartScores | None:
        """Maximum label and score over each patient's images; None when every patient
        has one image (the figures would repeat the image-level ones)."""
        names, index = np.unique(np.asarray(self.groups), return_inverse=True)
        if len(names) == len(self.groups):
            return None
        y = np.zeros(len(names), dtype=np.int64)
        p = np.zeros(len(names), dtype=np.float32)
        np.maximum.at(y, index, self.y)
        np.maximum.at(p, index, self.p)
        return PartScores(self.name + PATIENT_SUFFIX, y, p, [str(n) for n in names])


def score_parts(
    bundle: ModelBundle,
    images: ImageSet,
    *,
    external: bool,
    valid_scores: NDArray[np.float32] | None = None,
) -> list[PartScores]:
    """The image-level parts of `images` to evaluate, each scored once.

    Args:
        valid_scores: the validation split's probabilities when already known (a bundle
            just trained on `images`: `ModelBundle.valid_probabilities`).
    """
    if external:
        parts = [("external", images)]
    else:
        parts = [("valid", images.part("valid")), ("test", images.part("test"))]
        if images.modality == "US":
            dedup = images.subset((images.split == "test") & ~near_duplicates_of_train(images))
            parts.append(("test_dedup", dedup))
    scored = []
    for name, part in parts:
        known = valid_scores if name == "valid" else None
        if known is not None and len(known) != len(part.y):
            raise ValueError(f"{len(known)} validation scores for {len(part.y)} images")
        p = bundle.probabilities(part.x) if known is None else known
        scored.append(PartScores(name, part.y, p, part.groups))
    return scored


def evaluate_parts(bundle: ModelBundle, parts: list[PartScores]) -> list[Evaluation]:
    """Image-level and, where patients have several images, patient-level evaluations."""
    threshold = bundle.operating_point.threshold
    patients = [patient for part in parts if (patient := part.per_patient()) is not None]
    every = [*parts, *(part for part in patients if _both_classes(part.y))]
    return [evaluate(part.y, part.p, threshold, name=part.name) for part in every]


def _both_classes(y: NDArray[np.int64]) -> bool:
    """Whether an AUC can be estimated: 2+ cases of each class (small sets' patient level
    may have fewer, and is then left out rather than failing the run)."""
    return 2 <= int(y.sum()) <= len(y) - 2


def log_evaluation(
    bundle: ModelBundle,
    parts: list[PartScores],
    evaluations: list[Evaluation],
    history: list[dict[str, float]],
) -> None:
    """Log metrics, temperature, threshold, table and plots (ROC of every image-level part,
    confusion matrix and calibration of the last held-out one) to the active run."""
    for evaluation in evaluations:
        mlflow.log_metrics(evaluation.as_dict())
    mlflow.log_metrics(
        {"temperature": bundle.temperature, "threshold": bundle.operating_point.threshold}
    )
    mlflow.log_text(format_table(evaluations), "evaluation.txt")
    curves = {part.name: (part.y, part.p) for part in parts if part.name != "test_dedup"}
    points = {e.name: e.operating_point for e in evaluations if e.name in curves}
    held_out = "external" if "external" in curves else "test"
    mlflow.log_figure(roc_figure(curves, points), "plots/roc.png")
    mlflow.log_figure(
        confusion_figure(points[held_out], f"{held_out} split"), f"plots/confusion_{held_out}.png"
    )
    mlflow.log_figure(calibration_figure(*curves[held_out]), f"plots/calibration_{held_out}.png")
    if history:
        mlflow.log_figure(training_curves_figure(history), "plots/training_curves.png")
