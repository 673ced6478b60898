"""The same recipe and seed give the same model: trained twice, in two processes, bit for bit.

Each process loads BreastMNIST from ``BCDIAG_DATA_DIR``, trains a tiny recipe (two
members, two epochs: member seeds, shuffling per epoch and the one-cycle schedule all
take part) with ``BCDIAG_TORCH_THREADS=1``, and saves the bundle under the
registry's file name (``torch.save`` writes the file's name into the archive, so the
same bundle under another name has another sha256). Run as a script, this file is
that process: ``python tests/test_determinism.py DATA_DIR OUT_FOLDER RECIPE_JSON``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bcdiag.models.bundle import ModelBundle, file_sha256

RECIPE = {"epochs": 2, "members": 2, "seed": 7}
# bcdiag.models.registry.BUNDLE_FILE: the name every registered bundle has
BUNDLE_FILE = "bundle.pt"


def _start_training(data_dir: Path, out: Path) -> subprocess.Popen[str]:
    out.mkdir()
    env = dict(os.environ) | {"BCDIAG_TORCH_THREADS": "1"}
    command = [sys.executable, __file__, str(data_dir), str(out), json.dumps(RECIPE)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.slow
def test_a_recipe_and_seed_train_the_same_bundle_in_two_processes(
    data_dir: Path, tmp_path: Path
) -> None:
    folders = [tmp_path / "first", tmp_path / "second"]
    processes = [_start_training(data_dir, folder) for folder in folders]  # side by side
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    first, second = (
        ModelBundle.load(f / BUNDLE_FILE, file_sha256(f / BUNDLE_FILE)) for f in folders
    )

    assert len(first.members) == len(second.members) == RECIPE["members"]
    for mine, theirs in zip(first.members, second.members, strict=True):
        assert mine.keys() == theirs.keys()
        unequal = [key for key in mine if not torch.equal(mine[key], theirs[key])]
        assert unequal == [], f"{len(unequal)} of {len(mine)} tensors differ"
    assert (first.temperature, first.operating_point) == (
        second.temperature,
        second.operating_point,
    )
    assert file_sha256(folders[0] / BUNDLE_FILE) == file_sha256(folders[1] / BUNDLE_FILE)
    # Not trivially equal: each member trains from its own seed.
    one, other = first.members
    assert not torch.equal(one["head.3.weight"], other["head.3.weight"])


def _train(data_dir: Path, out: Path, recipe: dict[str, int]) -> None:
    """The training process: BreastMNIST, `recipe`, the bundle saved as ``out/bundle.pt``."""
    from bcdiag.datasets.breastmnist import load
    from bcdiag.models.recipe import Recipe
    from bcdiag.models.train import train_bundle

    bundle = train_bundle(load(data_dir), Recipe.parse(recipe, "test_determinism"))
    bundle.save(out / BUNDLE_FILE)


if __name__ == "__main__":
    _train(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]))
