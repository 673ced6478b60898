"""BreastMNIST (MedMNIST v2): breast ultrasound, official 546/78/156 split.

MedMNIST's labels are **0 = malignant, 1 = normal + benign**; bcdiag's positive
class is malignant, so ``y = 1 - label`` here and nowhere else.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bcdiag.datasets import ImageSet
from bcdiag.datasets.download import download
from bcdiag.errors import BcdiagError
from bcdiag.preprocess import prepare
from bcdiag.scans import read_scan

# MedMNIST v3 record (same 28 px file as v2's); MD5s as listed by the `medmnist`
# package's INFO["breastmnist"].
ZENODO_URL = "https://zenodo.org/records/10519652/files/{file}?download=1"
MD5 = {
    28: "750601b1f35ba3300ea97c75c52ff8f6",
    64: "742edef2a1fd1524b2efff4bd7ba9364",
    128: "363e4b3f8d712e9b5de15470a2aaadf1",
    224: "b56378a6eefa9fed602bb16d192d4c8b",
}
_SPLIT_KEYS = {"train": "train", "valid": "val", "test": "test"}


def file_name(size: int) -> str:
    """The official file name of the `size` px release."""
    if size not in MD5:
        raise BcdiagError(f"BreastMNIST comes in sizes {sorted(MD5)}, not {size}")
    return "breastmnist.npz" if size == 28 else f"breastmnist_{size}.npz"


def fetch(data_dir: Path, size: int = 28, url_template: str = ZENODO_URL) -> Path:
    """Download the `size` px file from MedMNIST's Zenodo record and verify its MD5."""
    name = file_name(size)
    target = data_dir / "breastmnist" / name
    return download(url_template.format(file=name), target, MD5[size], algorithm="md5")


def _as_png(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def load(data_dir: Path, size: int = 28, image_size: int | None = None) -> ImageSet:
    """The official split, each image read as a PNG through the inference path.

    Args:
        data_dir: folder holding ``breastmnist/<file>`` (see `fetch`).
        size: which release (28, 64, 128, 224).
        image_size: model input side; default `size`.
    """
    path = data_dir / "breastmnist" / file_name(size)
    if not path.exists():
        raise BcdiagError(f"{path} is missing; run `bcdiag data fetch breastmnist --size {size}`")
    xs, ys, ids, splits = [], [], [], []
    with np.load(path) as npz:
        for split, key in _SPLIT_KEYS.items():
            for index, (pixels, label) in enumerate(
                zip(npz[f"{key}_images"], npz[f"{key}_labels"], strict=True)
            ):
                image_id = f"{split}-{index}"
                scan = read_scan(_as_png(pixels), f"breastmnist {image_id}", modality="US")
                xs.append(
                    prepare(scan.image, modality="US", laterality=None, size=image_size or size)
                )
                ys.append(1 - int(label[0]))
                ids.append(image_id)
                splits.append(split)
    return ImageSet(
        "breastmnist", "US", np.stack(xs), np.asarray(ys, dtype=np.int64), ids, list(ids),
        np.asarray(splits),
    )  # fmt: skip
