"""Data-parallel training through fastai's distributed support: two CPU processes, gloo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bcdiag.datasets.breastmnist import load
from bcdiag.models.distributed import train_bundle_distributed
from bcdiag.models.recipe import Recipe


@pytest.mark.slow
def test_two_cpu_processes_train_one_model_with_gloo(data_dir: Path) -> None:
    images = load(data_dir)
    bundle = train_bundle_distributed(images, Recipe(epochs=1, members=1), processes=2)
    assert bundle.info["world_size"] == 2
    assert bundle.info["backend"] == "gloo"
    assert len(bundle.members) == 1
    valid = images.part("valid")
    p = bundle.probabilities(valid.x)
    assert p.shape == (78,) and len(np.unique(p.round(4))) > 5
    assert 0.0 < bundle.operating_point.threshold < 1.0
