"""Preparing a scan for a model: the one path shared by training and inference.

Each step is a small typed function on a float32 image in [0, 1]; `prepare`
chains them. Mammograms are oriented (chest wall on the left) and cropped to
the breast; ultrasound keeps its frame. The output is single-channel: a
(size, size) float32 array, still in [0, 1] (intensity normalisation belongs to
the model, which records its own statistics).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

Image2D = NDArray[np.float32]

FOREGROUND_LEVEL = 0.05  # digitised film background sits below this after windowing
MIN_CROP_FRACTION = 0.05  # a "breast" smaller than this share of the image is noise


def orient_chest_wall_left(image: Image2D, laterality: str | None) -> Image2D:
    """Mirror right-breast mammograms so the chest wall is on the left.

    Where the header gives no laterality, the side with more bright tissue is
    taken as the chest wall.
    """
    if laterality == "R":
        return np.ascontiguousarray(image[:, ::-1])
    if laterality == "L":
        return image
    half = image.shape[1] // 2
    if image[:, half:].sum() > image[:, :half].sum():
        return np.ascontiguousarray(image[:, ::-1])
    return image


def crop_to_foreground(image: Image2D, level: float = FOREGROUND_LEVEL) -> Image2D:
    """Crop to the bounding box of pixels brighter than `level` (the breast)."""
    mask = image > level
    if mask.mean() < MIN_CROP_FRACTION:
        return image
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def pad_to_square(image: Image2D) -> Image2D:
    """Pad with zeros (background) on the bottom/right to a square, keeping aspect."""
    rows, cols = image.shape
    side = max(rows, cols)
    out = np.zeros((side, side), dtype=np.float32)
    out[:rows, :cols] = image
    return out


def resize(image: Image2D, size: int) -> Image2D:
    """Resize a square image to size x size (area averaging when shrinking)."""
    if image.shape == (size, size):
        return image
    shrinking = image.shape[0] > size
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    resized = Image.fromarray(image, mode="F").resize((size, size), method)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def prepare(image: Image2D, *, modality: str | None, laterality: str | None, size: int) -> Image2D:
    """The model input for one image: (size, size) float32 in [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    if modality == "MG":
        image = crop_to_foreground(orient_chest_wall_left(image, laterality))
    return resize(pad_to_square(image), size)
