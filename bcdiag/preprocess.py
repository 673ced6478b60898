"""Preparing a scan for a model: the one path shared by training and inference.

`prepare` turns a float32 image in [0, 1] into the model's square, single-channel input
and says, as a `Framing`, where that input came from, so a heatmap over the input can
be laid back onto the uploaded image (`Framing.to_original`).

Mammograms are made the way a radiologist reads them:

- **bright tissue on a dark background**: an image stored the other way round (an
  8-bit export of a MONOCHROME1 DICOM; ~16% of rsna640) is detected from its border
  and inverted (DICOM MONOCHROME1 is already inverted by the reader);
- **the breast only**: the largest bright region, slightly dilated; background,
  burned-in labels and markers outside it are blanked and cropped away;
- **chest wall on the left**: from the header's laterality, else the brighter half;
- **aspect kept** (letterbox): the crop is scaled to fit, chest wall against the left
  edge, centred vertically, the rest black.

Ultrasound keeps its whole frame, letterboxed and centred. Intensity normalisation
belongs to the model, which records its own statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

Image2D = NDArray[np.float32]

INVERTED_BORDER = 0.5  # median brightness of the outer frame above which an MG is inverted
BORDER_FRACTION = 0.015  # share of each side that makes up the outer frame
ANALYSIS_SIDE = 128  # px: the breast is found on a blurred copy this size
FOREGROUND_LEVEL = 0.08  # blurred brightness above which a pixel is breast, not background
MIN_BREAST_FRACTION = 0.05  # a "breast" smaller than this share of the image is noise
DILATION_PX = 2  # at ANALYSIS_SIDE: keeps the skin line inside the mask


@dataclass(frozen=True)
class Framing:
    """Where a prepared input came from in its original (rows, cols) image.

    Attributes:
        shape: the original image's (rows, cols).
        inverted: the image was stored inverted and was turned the right way round.
        box: (top, bottom, left, right) of the crop in the original image.
        flipped: the crop was mirrored left-right (chest wall was on the right).
        placed: (top, left, rows, cols) of the scaled crop inside the square input.
        size: the side of the square input.
    """

    shape: tuple[int, int]
    inverted: bool
    box: tuple[int, int, int, int]
    flipped: bool
    placed: tuple[int, int, int, int]
    size: int

    def to_original(self, values: Image2D) -> Image2D:
        """A (size, size) map over the input (a heatmap) laid onto the original image:
        through the letterbox, the mirror and the crop; zero outside the crop."""
        top, left, rows, cols = self.placed
        inside = np.ascontiguousarray(values[top : top + rows, left : left + cols], np.float32)
        y0, y1, x0, x1 = self.box
        patch = cv2.resize(inside, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        out = np.zeros(self.shape, dtype=np.float32)
        out[y0:y1, x0:x1] = patch[:, ::-1] if self.flipped else patch
        return out


def looks_inverted(image: Image2D) -> bool:
    """Whether a mammogram shows a bright background (its outer frame's median > 0.5)."""
    rows, cols = image.shape
    k = max(1, round(BORDER_FRACTION * min(rows, cols)))
    frame = np.concatenate(
        [image[:k].ravel(), image[-k:].ravel(), image[:, :k].ravel(), image[:, -k:].ravel()]
    )
    return bool(np.median(frame) > INVERTED_BORDER)


def breast_mask(image: Image2D) -> NDArray[np.bool_] | None:
    """The largest bright region (the breast), dilated, at full size; None when there is
    no region of at least `MIN_BREAST_FRACTION` of the image."""
    rows, cols = image.shape
    small = cv2.resize(image, (ANALYSIS_SIDE, ANALYSIS_SIDE), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (5, 5), 0)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (small > FOREGROUND_LEVEL).astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < MIN_BREAST_FRACTION * ANALYSIS_SIDE**2:
        return None
    kernel = np.ones((2 * DILATION_PX + 1, 2 * DILATION_PX + 1), np.uint8)
    blob = cv2.dilate((labels == largest).astype(np.uint8), kernel)
    return cv2.resize(blob, (cols, rows), interpolation=cv2.INTER_NEAREST).astype(bool)


def chest_wall_on_right(image: Image2D, laterality: str | None) -> bool:
    """Whether the chest wall is on the right: a right breast by the header (``R``), or
    with no header the brighter half."""
    if laterality in ("L", "R"):
        return laterality == "R"
    half = image.shape[1] // 2
    return bool(image[:, half:].sum() > image[:, :half].sum())


def letterbox(
    image: Image2D, size: int, *, left_aligned: bool
) -> tuple[Image2D, tuple[int, int, int, int]]:
    """`image` scaled to fit a black (size, size) square, aspect kept (area averaging when
    shrinking); centred, or against the left edge. Returns it and (top, left, rows, cols)."""
    rows, cols = image.shape
    scale = size / max(rows, cols)
    new_rows = max(1, min(size, round(rows * scale)))
    new_cols = max(1, min(size, round(cols * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(np.ascontiguousarray(image), (new_cols, new_rows), interpolation=method)
    top = (size - new_rows) // 2
    left = 0 if left_aligned else (size - new_cols) // 2
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + new_rows, left : left + new_cols] = np.clip(scaled, 0.0, 1.0)
    return out, (top, left, new_rows, new_cols)


def prepare_framed(
    image: Image2D, *, modality: str | None, laterality: str | None, size: int
) -> tuple[Image2D, Framing]:
    """The model input for one image, (size, size) float32 in [0, 1], and its `Framing`."""
    image = np.asarray(image, dtype=np.float32)
    rows, cols = image.shape
    inverted, flipped, box = False, False, (0, rows, 0, cols)
    if modality == "MG":
        inverted = looks_inverted(image)
        if inverted:
            image = 1.0 - image
        mask = breast_mask(image)
        if mask is not None:
            ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            box = (int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
            image = np.where(mask, image, np.float32(0.0))
        image = image[box[0] : box[1], box[2] : box[3]]
        flipped = chest_wall_on_right(image, laterality)
        if flipped:
            image = image[:, ::-1]
    out, placed = letterbox(image, size, left_aligned=modality == "MG")
    return out, Framing((rows, cols), inverted, box, flipped, placed, size)


def prepare(image: Image2D, *, modality: str | None, laterality: str | None, size: int) -> Image2D:
    """The model input for one image: (size, size) float32 in [0, 1] (see `prepare_framed`)."""
    return prepare_framed(image, modality=modality, laterality=laterality, size=size)[0]
