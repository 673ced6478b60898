"""Patient-level k-fold cross-validation: every image scored once by a model that
never saw its patient, for small data sets where one test split is too noisy.

Fold k is the test fold; fold k+1 is the validation fold that chooses that
model's threshold and calibration; the rest trains. Patients, not images, are
assigned to folds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from bcdiag.datasets import ImageSet
from bcdiag.errors import ConfigurationError
from bcdiag.models.evaluate import Evaluation, evaluate
from bcdiag.models.metrics import OperatingPoint, operating_point
from bcdiag.models.recipe import Recipe
from bcdiag.models.train import train_bundle


def patient_folds(groups: list[str], folds: int, seed: int) -> NDArray[np.int64]:
    """The fold (0..folds-1) of each image, with all images of a patient in one fold."""
    patients = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(patients))
    fold_of = {patients[i]: rank % folds for rank, i in enumerate(order)}
    return np.asarray([fold_of[g] for g in groups], dtype=np.int64)


@dataclass(frozen=True)
class CrossValidation:
    """Out-of-fold probabilities and the pooled and per-fold figures."""

    probabilities: NDArray[np.float32]
    calls: NDArray[np.bool_]
    pooled: Evaluation
    pooled_calls: OperatingPoint
    per_fold: list[Evaluation]


def cross_validate(images: ImageSet, config: Recipe, folds: int = 5) -> CrossValidation:
    """Train `folds` models; pool their out-of-fold predictions.

    The pooled AUC's interval (DeLong) treats images as independent; per-fold
    figures show the spread between patient groups. The pooled evaluation's own
    operating point (at 0.5) is not a deployed one: `pooled_calls` counts the
    calls each fold's validation-chosen threshold made.
    """
    if folds < 3:
        raise ConfigurationError(
            f"cross-validation needs at least 3 folds (test, validation, training), not {folds}"
        )
    fold = patient_folds(images.groups, folds, config.seed)
    probabilities = np.zeros(len(images), dtype=np.float32)
    calls = np.zeros(len(images), dtype=bool)
    per_fold = []
    for k in range(folds):
        split = np.where(fold == k, "test", np.where(fold == (k + 1) % folds, "valid", "train"))
        bundle = train_bundle(replace(images, split=split), config.changed(seed=config.seed + k))
        test = fold == k
        probabilities[test] = bundle.probabilities(images.x[test])
        calls[test] = probabilities[test] >= bundle.operating_point.threshold
        per_fold.append(
            evaluate(
                images.y[test],
                probabilities[test],
                bundle.operating_point.threshold,
                name=f"fold{k}",
            )
        )
    pooled = evaluate(images.y, probabilities, 0.5, name="pooled")
    # Each fold has its own threshold, so the pooled operating point counts the calls made.
    pooled_calls = operating_point(images.y, calls.astype(np.float64), 0.5)
    return CrossValidation(probabilities, calls, pooled, pooled_calls, per_fold)
