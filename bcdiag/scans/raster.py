"""Read one PNG or JPEG (8 or 16 bit) into a `Scan` with Pillow.

Pillow's pixel limit is set from ``max_pixels`` and its DecompressionBombWarning is an
error, so a small file declaring a huge image is rejected (``decompression-bomb``)
before any pixel is decoded. Grey levels (`bcdiag.scans.intensity`): 8-bit images (and
colour, converted to BT.601 luminance) are divided by 255 and 16-bit greyscale by 65535,
keeping the brightness the image was saved with (PNG scales samples of fewer significant
bits up to the full 16).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from bcdiag.scans import rules
from bcdiag.scans.intensity import luminance, unit_range
from bcdiag.scans.rules import LIBRARY_ERRORS, reject
from bcdiag.scans.types import Scan, ScanMetadata
from bcdiag.settings import get_settings

# Pillow's modes for 16-bit greyscale PNG ("I" where it widens them to 32-bit integers).
_GREY_16 = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_END_MARKERS = {"png": b"IEND", "jpeg": b"\xff\xd9"}
_TAIL_BYTES = 64


def read_raster(data: bytes, name: str, kind: str, modality: str | None) -> Scan:
    """Decode a PNG (``kind="png"``) or JPEG (``kind="jpeg"``) image.

    Raises:
        ScanRejected: too large or small, a decompression bomb, truncated, corrupt, blank.
    """
    limit = get_settings().max_pixels
    Image.MAX_IMAGE_PIXELS = limit
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[kind.upper()]) as img:
                samples = len(img.getbands())
                bits = 16 if img.mode in _GREY_16 else 8
                rules.check_dimensions(name, img.height, img.width, 1, bits, samples)
                img.load()
                image, photometric = _to_unit_grey(img, name)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise reject(
                "decompression-bomb",
                name,
                f"the image header declares more than the limit of {limit:,} pixels, the "
                "mark of a damaged or hostile file (a decompression bomb). Upload the image "
                "at its normal size.",
            ) from None
        except LIBRARY_ERRORS:
            raise _undecodable(data, name, kind) from None
    rules.check_not_blank(name, image)
    metadata = ScanMetadata(
        format=kind,
        modality=modality,
        laterality=None,
        view=None,
        photometric_interpretation=photometric,
        bits_stored=bits,
        rows=image.shape[0],
        columns=image.shape[1],
        pixel_spacing_mm=None,
        presentation_intent=None,
        sop_instance_uid=None,
        study_instance_uid=None,
        manufacturer=None,
    )
    return Scan(image=image, metadata=metadata)


def _to_unit_grey(img: Image.Image, name: str) -> tuple[np.ndarray, str]:
    """Float32 [0, 1] grey values and the photometric interpretation they came from."""
    if img.mode in _GREY_16:
        return unit_range(np.asarray(img), 0.0, 65535.0), "MONOCHROME2"
    if img.mode in ("1", "L", "LA"):
        return unit_range(np.asarray(img.convert("L")), 0.0, 255.0), "MONOCHROME2"
    if img.mode in ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        photometric = "PALETTE COLOR" if img.mode.startswith("P") else "RGB"
        return unit_range(luminance(np.asarray(img.convert("RGB"))), 0.0, 255.0), photometric
    raise reject(
        "unsupported-photometric",
        name,
        f"the image's pixel format '{img.mode}' is not supported. "
        "Save it as 8- or 16-bit greyscale or as RGB.",
    )


def _undecodable(data: bytes, name: str, kind: str) -> Exception:
    """Truncated when the format's end marker is missing, else corrupt."""
    if _END_MARKERS[kind] not in data[-_TAIL_BYTES:]:
        return reject(
            "truncated",
            name,
            f"the {kind.upper()} file is cut off before its end. Copy or save the file again.",
        )
    return reject(
        "corrupt-pixel-data",
        name,
        f"the {kind.upper()} image data could not be decoded; the file is damaged. "
        "Save or export the image again.",
    )
