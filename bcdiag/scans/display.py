"""`display_pixels`: a scan's values as a viewer shows them, with its default window.

The intake (`bcdiag.scans.intensity`) maps every image onto [0, 1] for the models; a
viewer needs more: the values in the file's own units, so that window/level can be
changed, and the window the file asks for. Greyscale DICOM keeps its values after the
Modality LUT (RescaleSlope/Intercept); its default window is the first WindowCenter/
WindowWidth, else the input range of the first VOI LUT, else the 0.5th to 99.5th
percentile of the values. PNG, JPEG and colour DICOM (ultrasound) are shown as the
intake reads them, on a 0-255 scale with the full-range window 127.5/255.
MONOCHROME1 is flagged for inverted display (bright = dense, as everywhere in bcdiag).

Every file is first judged as an upload is (`bcdiag.scans.judge`: every intake rule, in
the guarded worker), so a hostile file is refused before this process decodes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from bcdiag.errors import ScanRejected
from bcdiag.scans.dicom import read_dicom_values
from bcdiag.scans.guard import judge

WindowFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
RASTER_SCALE = 255.0  # PNG/JPEG values are shown on the 8-bit scale they were made on
PERCENTILES = (0.5, 99.5)  # default window of a DICOM that names none
_SAMPLE_SIDE = 1024  # the percentiles come from at most about this many pixels a side
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True)
class DisplayImage:
    """A decoded scan for a viewer.

    Attributes:
        values: float32 (rows, columns) in the file's own units (DICOM after the
            Modality LUT) or 0-255 (PNG, JPEG, colour DICOM as luminance).
        window_center: the default window's centre, in the units of ``values``.
        window_width: the default window's width (positive).
        invert: show inverted (MONOCHROME1), so that dense tissue is bright.
        window_function: the DICOM VOI LUT Function the window is applied with.
    """

    values: np.ndarray
    window_center: float
    window_width: float
    invert: bool
    window_function: WindowFunction = "LINEAR"


def display_pixels(
    data: bytes, name: str, accepted: Mapping[str, Any] | None = None
) -> DisplayImage:
    """Judge, decode and describe one scan file for display.

    Args:
        data: the file's bytes (DICOM, PNG or JPEG).
        name: the file's name, used only in messages.
        accepted: the metadata (`ScanMetadata.as_dict`) the intake recorded when it
            accepted these exact bytes (a stored scan, its hash checked on reading): a
            greyscale DICOM is then decoded here without judging it again, which for a
            full-size mammogram is most of the time to show it.

    Raises:
        ScanRejected: the file breaks an intake rule (the verdict's code and message).
    """
    if accepted is not None and _greyscale_dicom(accepted):
        photometric = str(accepted["photometric_interpretation"])
    else:
        verdict = judge(data, name)
        if verdict.scan is None:
            raise ScanRejected(str(verdict.code), verdict.message)
        meta = verdict.scan.metadata
        if not _greyscale_dicom(meta.as_dict()):
            values = verdict.scan.image * np.float32(RASTER_SCALE)
            return DisplayImage(values, RASTER_SCALE / 2, RASTER_SCALE, invert=False)
        photometric = meta.photometric_interpretation
    values, header = read_dicom_values(data, name)
    center, width = _window(header) or _voi_lut_range(header) or _percentile_window(values)
    return DisplayImage(
        values,
        center,
        width,
        invert=photometric == "MONOCHROME1",
        window_function=_window_function(header),
    )


def _greyscale_dicom(metadata: Mapping[str, Any]) -> bool:
    return metadata.get("format") == "dicom" and (
        metadata.get("photometric_interpretation") in _GREYSCALE
    )


def _window(header: Dataset) -> tuple[float, float] | None:
    """The first WindowCenter/WindowWidth pair, or None when absent or unusable."""
    center, width = _first_number(header, "WindowCenter"), _first_number(header, "WindowWidth")
    if center is None or width is None or not width > 0:
        return None
    return center, width


def _voi_lut_range(header: Dataset) -> tuple[float, float] | None:
    """A window over the input range of the first VOI LUT (LUTDescriptor), or None."""
    sequence = header.get("VOILUTSequence")
    descriptor = sequence[0].get("LUTDescriptor") if sequence else None
    if descriptor is None or len(descriptor) != 3:
        return None
    entries = int(descriptor[0]) or 2**16  # 0 means 65536 entries (PS3.3 C.11.2.1.1)
    first = float(descriptor[1])
    return first + (entries - 1) / 2, float(entries)


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    """The window from the 0.5th to the 99.5th percentile (a subsample's)."""
    step = max(1, max(values.shape) // _SAMPLE_SIDE)
    low, high = np.percentile(values[::step, ::step], PERCENTILES)
    if high <= low:  # almost every pixel the same: show the whole range instead
        low, high = float(values.min()), float(values.max())
    return (float(low) + float(high)) / 2, float(high - low) or 1.0


def _window_function(header: Dataset) -> WindowFunction:
    """VOILUTFunction, LINEAR when absent or not one DICOM defines."""
    name = str(header.get("VOILUTFunction") or "LINEAR").strip().upper()
    if name == "LINEAR_EXACT":
        return "LINEAR_EXACT"
    return "SIGMOID" if name == "SIGMOID" else "LINEAR"


def _first_number(header: Dataset, keyword: str) -> float | None:
    """The first value of a multi-valued DS element as a finite float.

    The intake has already read the window it applies; a value it did not use (a VOI
    LUT took precedence) that does not parse counts as absent, and the next default
    applies: the image is still shown.
    """
    value = header.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = float(value[0] if isinstance(value, MultiValue) else value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
