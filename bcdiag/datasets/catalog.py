"""Data sets by name, so notebooks, the CLI and the scheduler ask for them one way."""

from __future__ import annotations

from pathlib import Path

from bcdiag.datasets import ImageSet, breastmnist, folder, mias
from bcdiag.errors import ConfigurationError

DATASETS = ("breastmnist", "mias", "folder")


def load_dataset(name: str, data_dir: Path, image_size: int, seed: int = 0) -> ImageSet:
    """Load a data set by name, prepared at `image_size` (split seeded where it is ours).

    ``folder`` is a researcher's own: `data_dir` itself holds ``labels.csv`` and the files.
    """
    if name == "breastmnist":
        return breastmnist.load(data_dir, size=28, image_size=image_size)
    if name == "mias":
        return mias.load(data_dir, image_size=image_size, seed=seed)
    if name == "folder":
        return folder.load(data_dir, image_size=image_size, seed=seed)
    raise ConfigurationError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
