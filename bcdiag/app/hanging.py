"""How an exam's images are hung: the standard mammography hanging (RCC LCC over RMLO
LMLO, chest walls facing each other in the middle), the exam score and its rule.

Pure functions on stored data and pixels: no widgets, so each rule has its own test.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bcdiag.scans.display import DisplayImage
from bcdiag.storage.worklist import ExamImageEntry

HANGING = ("RCC", "LCC", "RMLO", "LMLO")
"""Mammography slots, left to right and top to bottom of a 2×2 layout."""

EXAM_SCORE_RULE = "the highest probability among its images"
"""How the exam score is made from its images' scores (mammography: over the views)."""

_EDGE = 0.08  # share of the width whose brightness says where the chest wall is
_SAMPLE_SIDE = 256  # pixels a side the edge comparison looks at, at most


def slot(image: ExamImageEntry) -> str | None:
    """The image's hanging slot ("RCC" …) from its laterality and view, if it has one."""
    name = f"{image.laterality or ''}{image.view or ''}"
    return name if name in HANGING else None


def label(image: ExamImageEntry) -> str:
    """What the image is called on screen: its slot, its view, or its file name."""
    return slot(image) or " ".join(filter(None, (image.laterality, image.view))) or image.filename


def hung(images: list[ExamImageEntry]) -> tuple[dict[str, ExamImageEntry], list[ExamImageEntry]]:
    """The images in their hanging slots (the first of each slot) and the rest in order."""
    slots: dict[str, ExamImageEntry] = {}
    rest = []
    for image in images:
        name = slot(image)
        if name is not None and name not in slots:
            slots[name] = image
        else:
            rest.append(image)
    return slots, rest


def in_hanging_order(images: list[ExamImageEntry]) -> list[ExamImageEntry]:
    """The images as hung, read left to right and top to bottom, then the rest."""
    slots, rest = hung(images)
    return [slots[name] for name in HANGING if name in slots] + rest


def exam_score(images: list[ExamImageEntry]) -> float | None:
    """`EXAM_SCORE_RULE` over the images' newest analyses; None before any analysis."""
    scores = [image.analysis.probability for image in images if image.analysis is not None]
    return max(scores) if scores else None


def chest_wall_on_left(image: DisplayImage) -> bool:
    """Whether the breast lies against the image's left edge: a mammogram shows tissue
    along the whole chest-wall edge and background along the other."""
    values = image.values
    step = max(1, max(values.shape) // _SAMPLE_SIDE)
    sample = values[::step, ::step]
    edge = max(1, round(sample.shape[1] * _EDGE))
    left, right = float(sample[:, :edge].mean()), float(sample[:, -edge:].mean())
    return (left < right) if image.invert else (left > right)


def facing(
    image: DisplayImage, heat: np.ndarray | None, laterality: str | None
) -> tuple[DisplayImage, np.ndarray | None]:
    """The image (and its heat) mirrored if needed so that a right breast's chest wall is
    on the right and a left breast's on the left; unchanged without a laterality."""
    if laterality not in ("R", "L") or chest_wall_on_left(image) == (laterality == "L"):
        return image, heat
    mirrored = replace(image, values=np.ascontiguousarray(image.values[:, ::-1]))
    return mirrored, None if heat is None else np.ascontiguousarray(heat[:, ::-1])
