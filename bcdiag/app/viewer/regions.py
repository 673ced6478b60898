"""The pure-numpy side of the scan viewer: which pixels answer a view, and how they travel.

A view asks for a box of the image (in image pixels, fractions allowed) drawn onto a
number of screen pixels. `plan_region` decides the sizes so that no answer holds more
pixels than the screen asked for: at magnification (1 screen pixel or more per image
pixel) the image comes at its own resolution, whole pixels, and the browser enlarges it;
below, it is area-averaged to the screen's resolution. The heat map always comes at the
screen's resolution, so its outline stays smooth at any zoom.

`Pyramid` keeps an image and its successive halvings, so that answering a view costs
work in proportion to the pixels sent, not to the original (a 4536 x 2920 mammogram's
full view is averaged from the 567 x 365 level, not from 13 million pixels).
`Quantisation` turns values into 16-bit levels with one offset and scale per image, so
the browser windows them without asking the kernel again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LEVELS = 65535  # uint16 levels a value is quantised to
HEAT_LEVELS = 255  # uint8 levels of the heat map
MAX_SIDE = 8192  # the most screen pixels a side one request may ask for


@dataclass(frozen=True)
class Box:
    """A rectangle of the image in pixel edges: rows [top, bottom), columns [left, right)."""

    top: float
    left: float
    bottom: float
    right: float

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def width(self) -> float:
        return self.right - self.left

    def scaled(self, rows: float, columns: float) -> Box:
        """The same rectangle on a grid ``rows`` and ``columns`` times as fine."""
        return Box(self.top * rows, self.left * columns, self.bottom * rows, self.right * columns)


@dataclass(frozen=True)
class RegionPlan:
    """What answers one request: the image's box and size, and the heat map's."""

    image_box: Box
    image_size: tuple[int, int]
    heat_box: Box
    heat_size: tuple[int, int]


def plan_region(shape: tuple[int, int], box: Box, width: int, height: int) -> RegionPlan:
    """The answer to a view of ``box`` drawn onto ``width`` x ``height`` screen pixels.

    Args:
        shape: the image's (rows, columns).
        box: the requested rectangle; the part outside the image is dropped.
        width, height: the screen pixels the whole ``box`` covers (at most `MAX_SIDE`).

    Raises:
        ValueError: the box is empty, not finite, or misses the image; a size is not positive.
    """
    rows, columns = shape
    numbers = (box.top, box.left, box.bottom, box.right)
    if not all(math.isfinite(v) for v in numbers) or box.height <= 0 or box.width <= 0:
        raise ValueError(f"not a region of the image: {box}")
    if not 0 < width <= MAX_SIDE or not 0 < height <= MAX_SIDE:
        raise ValueError(f"a view of {width} x {height} pixels is not allowed")
    scale = min(width / box.width, height / box.height)  # screen pixels per image pixel
    inside = Box(
        max(box.top, 0.0), max(box.left, 0.0), min(box.bottom, rows), min(box.right, columns)
    )
    if inside.height <= 0 or inside.width <= 0:
        raise ValueError(f"the region {box} lies outside the {rows} x {columns} image")
    heat_size = (max(1, round(inside.height * scale)), max(1, round(inside.width * scale)))
    if scale < 1:
        return RegionPlan(inside, heat_size, inside, heat_size)
    whole = Box(
        math.floor(inside.top), math.floor(inside.left),
        math.ceil(inside.bottom), math.ceil(inside.right),
    )  # fmt: skip
    native = (min(int(whole.height), heat_size[0]), min(int(whole.width), heat_size[1]))
    return RegionPlan(whole, native, inside, heat_size)


class Pyramid:
    """An image (float32, 2-D) and its halvings, each built when first needed.

    Level ``k`` holds 2x2 means of level ``k - 1`` (an odd last row or column repeated
    first), so each of its pixels covers 2^k x 2^k level-0 pixels; those overhanging the
    image's last row or column stand for its part inside, the edge weighed a little more.
    """

    def __init__(self, image: NDArray[np.floating]) -> None:
        if image.ndim != 2 or min(image.shape) < 1:
            raise ValueError(f"a pyramid needs a 2-D image, not shape {image.shape}")
        self.shape: tuple[int, int] = (int(image.shape[0]), int(image.shape[1]))
        self._levels: list[NDArray[np.float32]] = [np.asarray(image, dtype=np.float32)]

    def region(self, box: Box, size: tuple[int, int]) -> NDArray[np.float32]:
        """``box`` (level-0 pixels) resampled to ``size`` (rows, columns).

        Taken from the coarsest level that still has at least the output's resolution.
        """
        density = max(size[0] / box.height, size[1] / box.width)  # output pixels per pixel
        index = 0
        while density * 2 ** (index + 1) <= 1 and min(self._level(index).shape) > 1:
            index += 1
        factor = 0.5**index
        return resample(self._level(index), box.scaled(factor, factor), size)

    def _level(self, index: int) -> NDArray[np.float32]:
        while len(self._levels) <= index:
            finer = self._levels[-1]
            rows, columns = finer.shape
            even = np.pad(finer, ((0, rows % 2), (0, columns % 2)), mode="edge")
            coarser = even[0::2, 0::2] + even[1::2, 0::2] + even[0::2, 1::2] + even[1::2, 1::2]
            self._levels.append(coarser * np.float32(0.25))
        return self._levels[index]


def resample(image: NDArray[np.floating], box: Box, size: tuple[int, int]) -> NDArray[np.float32]:
    """``box`` of ``image`` at ``size`` (rows, columns), float32.

    Each axis is area-averaged where it shrinks (every source pixel counts by the part of
    it an output pixel covers: no aliasing, no pixel skipped) and linearly interpolated
    between pixel centres where it grows. Only the box and a pixel around it are read.
    """
    top, left = max(math.floor(box.top) - 1, 0), max(math.floor(box.left) - 1, 0)
    bottom = min(math.ceil(box.bottom) + 1, image.shape[0])
    right = min(math.ceil(box.right) + 1, image.shape[1])
    window = np.asarray(image[top:bottom, left:right], dtype=np.float64)
    rows = _resample_axis(window, box.top - top, box.bottom - top, size[0])
    both = _resample_axis(rows.T, box.left - left, box.right - left, size[1]).T
    return both.astype(np.float32)


def _resample_axis(
    array: NDArray[np.float64], start: float, stop: float, count: int
) -> NDArray[np.float64]:
    """Rows [start, stop) of ``array`` as ``count`` rows."""
    if count <= stop - start:
        return _area_average(array, start, stop, count)
    last = array.shape[0] - 1
    centres = np.clip(start + (np.arange(count) + 0.5) * ((stop - start) / count) - 0.5, 0, last)
    below = np.minimum(np.floor(centres).astype(np.intp), max(last - 1, 0))
    above = np.minimum(below + 1, last)
    weight = (centres - below)[:, None]
    result: NDArray[np.float64] = array[below] * (1 - weight) + array[above] * weight
    return result


def _area_average(
    array: NDArray[np.float64], start: float, stop: float, count: int
) -> NDArray[np.float64]:
    """Rows [start, stop) averaged into ``count`` equal bands, fractional edges weighed in.

    The integral of the rows up to an edge is the running sum of the whole pixels before
    it plus the covered part of the pixel it falls in; a band is the difference of two.
    """
    first = math.floor(start)
    rows = array[first : math.ceil(stop)]
    running = np.concatenate([np.zeros((1, *rows.shape[1:])), np.cumsum(rows, axis=0)])
    edges = np.linspace(start, stop, count + 1) - first
    pixel = np.clip(np.floor(edges).astype(np.intp), 0, len(rows) - 1)
    integral = running[pixel] + (edges - pixel)[:, None] * rows[pixel]
    result: NDArray[np.float64] = np.diff(integral, axis=0) / ((stop - start) / count)
    return result


@dataclass(frozen=True)
class Quantisation:
    """Values as uint16 levels: ``value = offset + level * scale``."""

    offset: float
    scale: float

    @classmethod
    def covering(cls, values: NDArray[np.floating]) -> Quantisation:
        """One level per unit for integer values spanning at most `LEVELS` (lossless),
        else the span divided into `LEVELS` steps."""
        low, high = float(values.min()), float(values.max())
        span = high - low
        if span == 0 or (span <= LEVELS and np.array_equal(values, np.rint(values))):
            return cls(low, 1.0)
        return cls(low, span / LEVELS)

    def levels(self, values: NDArray[np.floating]) -> NDArray[np.uint16]:
        """The nearest level of each value (little-endian uint16)."""
        scaled = np.rint((np.asarray(values, dtype=np.float64) - self.offset) / self.scale)
        return np.clip(scaled, 0, LEVELS).astype("<u2")


def heat_levels(heat: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Heat in [0, 1] as uint8 levels 0-255."""
    levels: NDArray[np.uint8] = np.rint(np.clip(heat, 0.0, 1.0) * HEAT_LEVELS).astype(np.uint8)
    return levels
