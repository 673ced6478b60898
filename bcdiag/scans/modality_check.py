"""Does an image look like the modality it is said to be (mammogram or ultrasound)?

A mammogram is a breast outline against one side of a large uniform background (dark, or
bright when stored inverted); an ultrasound frame is a field of speckle and horizontal
layers, cropped or framed by a dark border with text. Sixteen cheap features of a
32 x 32 thumbnail (after turning an inverted image the right way round) feed a logistic
model whose weights and thresholds `benchmarks/modality_check.py --fit` chose on the
train splits of BUSI, BreastMNIST, RSNA and mini-MIAS (`modality_weights`). Every image
the intake accepts (28 px and up) can be judged: the features need no fine detail.

The check is lenient by design: an image is refused only when it clearly looks like the
other modality; anything in between passes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bcdiag.scans import modality_weights as fitted

THUMBNAIL_SIDE = 32
BACKGROUND_LEVEL = 0.1  # thumbnail pixels below this (after polarity) are background
FEATURES = (
    "inverted", "background", "side_asymmetry", "centre_offset", "top_bottom_background",
    "border_background", "q10", "q50", "q90", "gradient", "std",
    "laplacian", "entropy", "mid_grey", "foreground_std", "foreground_mean",
)  # fmt: skip
_NAMES = {"MG": "a mammogram", "US": "an ultrasound image"}
_LOOKS = {
    "MG": "a breast outline against one side of a large uniform background",
    "US": "a field of ultrasound speckle without the background around a breast",
}

Vector = NDArray[np.float64]


def thumbnail(image: NDArray[np.float32]) -> NDArray[np.float64]:
    """The image as THUMBNAIL_SIDE x THUMBNAIL_SIDE area averages (float64, [0, 1])."""
    side = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    small = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F").resize(
        side, Image.Resampling.BOX
    )
    return np.asarray(small, dtype=np.float64)


def features(image: NDArray[np.float32]) -> Vector:
    """The `FEATURES` of a [0, 1] grey image, in that order."""
    t = thumbnail(image)
    border = np.concatenate([t[0], t[-1], t[:, 0], t[:, -1]])
    inverted = float(np.median(border) > 0.5)  # a mammogram stored white-on-black
    if inverted:
        t = 1.0 - t
    background = t < BACKGROUND_LEVEL
    half, band = THUMBNAIL_SIDE // 2, THUMBNAIL_SIDE // 4
    columns = t.sum(axis=0)
    x = (np.arange(THUMBNAIL_SIDE) + 0.5) / THUMBNAIL_SIDE
    centre = float((columns * x).sum() / max(float(columns.sum()), 1e-6))
    dx = float(np.abs(np.diff(t, axis=1)).mean())
    dy = float(np.abs(np.diff(t, axis=0)).mean())
    inner = t[1:-1, 1:-1]
    laplacian = np.abs(4 * inner - t[:-2, 1:-1] - t[2:, 1:-1] - t[1:-1, :-2] - t[1:-1, 2:])
    histogram = np.histogram(t, bins=16, range=(0.0, 1.0))[0] / t.size
    present = histogram[histogram > 0]
    foreground = t[~background] if (~background).any() else t.ravel()
    return np.array(
        [
            inverted,
            background.mean(),
            abs(background[:, :half].mean() - background[:, half:].mean()),
            abs(centre - 0.5),
            min(background[:band].mean(), background[-band:].mean()),
            (border < BACKGROUND_LEVEL).mean(),
            *np.quantile(t, [0.1, 0.5, 0.9]),
            dx + dy,
            t.std(),
            laplacian.mean(),
            -(present * np.log(present)).sum(),
            ((t > 0.25) & (t < 0.75)).mean(),
            foreground.std(),
            foreground.mean(),
        ]
    )


def score(values: Vector) -> float:
    """How much images with these `features` look like a mammogram, in [0, 1]."""
    standard = (values - np.asarray(fitted.MEAN)) / np.asarray(fitted.SCALE)
    logit = float(standard @ np.asarray(fitted.COEFFICIENTS)) + fitted.INTERCEPT
    return float(1.0 / (1.0 + np.exp(-logit)))


def passes(mammogram_score: float, modality: str) -> bool:
    """Whether an image of this `score` passes as ``modality`` ("MG" or "US")."""
    if modality == "US":
        return mammogram_score <= fitted.US_AT_MOST
    return mammogram_score >= fitted.MG_AT_LEAST


def mismatch(image: NDArray[np.float32], modality: str) -> str | None:
    """None when the image plausibly is ``modality`` ("MG" or "US"), else the reason."""
    mammogram_score = score(features(image))
    if passes(mammogram_score, modality):
        return None
    seen = "US" if modality == "MG" else "MG"
    return (
        f"looks like {_NAMES[seen]}, not {_NAMES[modality]}: {_LOOKS[seen]} "
        f"(mammogram score {mammogram_score:.2f})"
    )
