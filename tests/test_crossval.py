"""Patient-level cross-validation on real mini-MIAS mammograms (tiny settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bcdiag.datasets.mias import load
from bcdiag.errors import ConfigurationError
from bcdiag.lifecycle.crossval import cross_validate, patient_folds
from bcdiag.models.recipe import Recipe


def test_patient_folds_never_split_a_patient() -> None:
    groups = [f"p{i // 2}" for i in range(40)]  # two images per patient
    fold = patient_folds(groups, folds=4, seed=1)
    for patient in set(groups):
        assert len({int(f) for f, g in zip(fold, groups, strict=True) if g == patient}) == 1
    assert sorted(np.bincount(fold).tolist()) == [10, 10, 10, 10]


def test_every_mammogram_is_scored_once_by_a_model_blind_to_its_patient(data_dir: Path) -> None:
    images = load(data_dir, image_size=32, seed=0)
    result = cross_validate(images, Recipe(image_size=32, epochs=1, members=1), folds=3)
    assert len(result.per_fold) == 3
    assert sum(e.n for e in result.per_fold) == len(images) == 322
    assert sum(e.n_positive for e in result.per_fold) == 52
    assert ((result.probabilities >= 0) & (result.probabilities <= 1)).all()
    assert result.pooled.n == 322 and 0.0 <= result.pooled.auc.auc <= 1.0
    counted = result.pooled_calls
    assert counted.tp + counted.fp == int(result.calls.sum())


def test_two_folds_are_refused_they_leave_nothing_to_train_on(data_dir: Path) -> None:
    images = load(data_dir, image_size=32, seed=0)
    with pytest.raises(ConfigurationError, match="at least 3 folds"):
        cross_validate(images, Recipe(image_size=32, epochs=1, members=1), folds=2)
