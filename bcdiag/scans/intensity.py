"""Small intensity transforms shared by the DICOM and raster readers."""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma weights, the ones DICOM's YBR_FULL uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey values (float32, same scale as the input) of an (rows, columns, 3) image."""
    return np.asarray(rgb[..., :3], dtype=np.float32) @ _LUMA


def min_max(values: np.ndarray) -> np.ndarray:
    """Stretch to [0, 1] (float32); a constant image becomes all zeros."""
    values = np.asarray(values, dtype=np.float32)
    low = float(values.min())
    spread = float(values.max()) - low
    if spread == 0.0:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / spread).astype(np.float32, copy=False)


def full_scale(values: np.ndarray, maximum: float) -> np.ndarray:
    """Divide by the container's largest value (e.g. 255 for 8 bit) into [0, 1] (float32)."""
    scaled = np.asarray(values, dtype=np.float32) / np.float32(maximum)
    return np.clip(scaled, 0.0, 1.0, out=scaled)
