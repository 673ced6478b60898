"""The one intensity rule of the intake, shared by the DICOM and raster readers.

Stored values map to [0, 1] through the range their container can hold (255 for 8 bit,
65535 for 16-bit PNG, BitsStored or the window's output range for DICOM), never through
the image's own minimum and maximum: the same pixels then give the same values in every
container, and a faint image stays faint.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma weights, the ones DICOM's YBR_FULL uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey values (float32, same scale as the input) of an (rows, columns, 3) image."""
    return np.asarray(rgb[..., :3], dtype=np.float32) @ _LUMA


def unit_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 (either may be the larger), clipped (float32)."""
    scaled = (np.asarray(values, dtype=np.float64) - low) / (high - low)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)
