"""Labelled image sets for training and evaluation, all through one interface.

Every set is returned as an `ImageSet`: images already passed through
`bcdiag.scans.read_scan` and `bcdiag.preprocess.prepare` (the path inference
takes), labels with **1 = malignant**, the group (patient) of each image, and
the split each image belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from numpy.typing import NDArray
from PIL import Image

SPLITS = ("train", "valid", "test")
NEAR_DUPLICATE_MAE = 2.0  # grey levels: BUSI's repeated frames (see the shared data README)


@dataclass(frozen=True)
class ImageSet:
    """Prepared images with labels.

    Attributes:
        name: data set name, e.g. ``"breastmnist"``.
        modality: ``"US"`` or ``"MG"``.
        x: (N, size, size) float32 in [0, 1], model input before normalisation.
        y: (N,) int64, 1 = malignant, 0 = benign or normal.
        ids: stable identifier of each image.
        groups: patient (or other independence unit) of each image.
        split: (N,) ``"train"`` / ``"valid"`` / ``"test"``.
    """

    name: str
    modality: str
    x: NDArray[np.float32]
    y: NDArray[np.int64]
    ids: list[str]
    groups: list[str]
    split: NDArray[np.str_]

    def subset(self, mask: NDArray[np.bool_]) -> ImageSet:
        """The images where `mask` is true."""
        index = np.flatnonzero(mask)
        return ImageSet(
            self.name,
            self.modality,
            self.x[index],
            self.y[index],
            [self.ids[i] for i in index],
            [self.groups[i] for i in index],
            self.split[index],
        )

    def part(self, split: str) -> ImageSet:
        """One split: ``"train"``, ``"valid"`` or ``"test"``."""
        return self.subset(self.split == split)

    def __len__(self) -> int:
        return len(self.y)

    def save(self, path: Path) -> None:
        """Write the set as one ``.npz`` (e.g. for data-parallel training processes)."""
        np.savez(
            path,
            name=self.name,
            modality=self.modality,
            x=self.x,
            y=self.y,
            ids=np.array(self.ids, dtype=np.str_),
            groups=np.array(self.groups, dtype=np.str_),
            split=self.split,
        )

    @classmethod
    def load(cls, path: Path) -> ImageSet:
        """A set written by `save`."""
        with np.load(path, allow_pickle=False) as npz:
            return cls(
                str(npz["name"]),
                str(npz["modality"]),
                npz["x"],
                npz["y"],
                [str(i) for i in npz["ids"]],
                [str(g) for g in npz["groups"]],
                npz["split"],
            )


def patient_splits(
    patients: list[str], seed: int, fractions: tuple[float, float] = (0.6, 0.2)
) -> dict[str, str]:
    """Assign each distinct patient to train / valid / test at random (seeded)."""
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = round(fractions[0] * len(unique))
    n_valid = round(fractions[1] * len(unique))
    names = ["train"] * n_train + ["valid"] * n_valid
    names += ["test"] * (len(unique) - len(names))
    return {unique[i]: names[rank] for rank, i in enumerate(order)}


def near_duplicates_of_train(images: ImageSet) -> NDArray[np.bool_]:
    """Test images that repeat a training image: within `NEAR_DUPLICATE_MAE` grey levels of
    one, or with the same 64-bit perceptual hash (pHash: the same frame re-encoded or
    rescaled, e.g. 6 of busi256's 98 test images, which the pixel rule misses above 28 px)."""
    train_images = images.part("train").x
    train = train_images.reshape(-1, images.x[0].size) * 255.0
    train_hashes = {_phash(image) for image in train_images}
    flags = np.zeros(len(images), dtype=bool)
    for index in np.flatnonzero(images.split == "test"):
        mae = np.abs(train - images.x[index].reshape(1, -1) * 255.0).mean(axis=1)
        same_hash = _phash(images.x[index]) in train_hashes
        flags[index] = float(mae.min()) <= NEAR_DUPLICATE_MAE or same_hash
    return flags


def _phash(image: NDArray[np.float32]) -> str:
    """The pHash of a prepared image, as hex."""
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return str(imagehash.phash(Image.fromarray(pixels)))
