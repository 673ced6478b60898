"""Validation policy: one function per rule, each raising `ScanRejected` with a stable code.

Decisions, and why:

- Modality: only MG (mammography) and US (breast ultrasound) have models. MR gets its
  own sentence ("no model for MR yet"); every other modality is named in the message.
- "For Processing" images (PresentationIntentType FOR PROCESSING) are rejected with
  ``for-processing``: raw detector data looks nothing like the For Presentation images
  the models are trained on, so the user is asked for the For Presentation image.
- Multi-frame objects (NumberOfFrames > 1: tomosynthesis, cine loops) are rejected with
  ``multi-frame``: the models take one 2-D image, and picking a frame silently would
  analyse something the user did not choose.
- Size: Rows x Columns x Frames and the decoded byte count are checked against
  ``max_pixels`` / ``max_decoded_bytes`` before any decoding, so a lying header cannot
  make the reader allocate gigabytes. The smallest side must be ``min_side_px``
  (default 28, so BreastMNIST's 28x28 ultrasound PNGs pass).
- Modality mismatch (uploads only, `check_looks_like_modality`): an image that clearly
  looks like the other modality (a mammogram given as ultrasound, a DICOM saying US that
  holds a mammogram) is rejected with ``modality-mismatch``; see
  `bcdiag.scans.modality_check` for how, and `benchmarks/modality_check.py` for how well.
- Blank: an image is blank when it is constant, or when 98 % of its pixels (1st to
  99th percentile) lie within 2 % of the display range.
- Sequences nested deeper than `MAX_SEQUENCE_DEPTH` are rejected: no image header needs
  them and deep recursion is how hostile files crash parsers.

Messages are plain text, one sentence or two: the file, the problem, what to do.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from bcdiag.errors import ScanRejected
from bcdiag.scans.modality_check import mismatch
from bcdiag.settings import get_settings

ACCEPTED_MODALITIES = ("MG", "US")
_MODALITY_NAMES = {"MG": "mammography (MG)", "US": "ultrasound (US)"}
# What pydicom, its decoder plugins and Pillow raise on malformed input. RecursionError
# (a RuntimeError) is handled before these; MemoryError is left to the guard.
LIBRARY_ERRORS: tuple[type[Exception], ...] = (
    ArithmeticError,
    AttributeError,
    EOFError,
    LookupError,
    NotImplementedError,
    OSError,
    RuntimeError,
    SyntaxError,
    TypeError,
    ValueError,
    struct.error,
    zlib.error,
)
MAX_SEQUENCE_DEPTH = 16
BLANK_SPREAD = 0.02
_MAX_NAME_CHARS = 200
_UPLOAD_HINT = "Upload a mammogram (MG) or breast ultrasound (US) image."


def shown(name: str) -> str:
    """The file name as it may appear in a message: printable, one line, bounded."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name)
    if len(clean) > _MAX_NAME_CHARS:
        clean = clean[: _MAX_NAME_CHARS - 3] + "..."
    return clean or "(unnamed file)"


def reject(code: str, name: str, text: str) -> ScanRejected:
    """A rejection whose message starts with the (sanitised) file name."""
    return ScanRejected(code, f"{shown(name)}: {text}")


def check_not_empty(name: str, data: bytes) -> None:
    """Zero bytes is an upload that went wrong, not a scan."""
    if not data:
        raise reject("empty-file", name, "the file is empty (0 bytes). Upload the scan again.")


def check_file_size(name: str, size: int) -> None:
    """A file larger than the decoded-pixel budget cannot hold an acceptable image."""
    limit = get_settings().max_decoded_bytes
    if size > limit:
        raise reject(
            "too-large",
            name,
            f"the file is {size:,} bytes, over the limit of {limit:,} bytes. "
            "Upload a single 2-D image, not an archive or a series.",
        )


def check_modality(name: str, modality: str | None, *, from_dicom: bool) -> None:
    """Only MG and US are analysed; None (a PNG/JPEG without hint) is left to the app."""
    if modality is None or modality in ACCEPTED_MODALITIES:
        return
    subject = "this DICOM file is modality" if from_dicom else "the modality given is"
    if modality == "MR":
        text = f"{subject} MR and there is no model for MR yet; bcdiag analyses MG and US only."
    else:
        text = (
            f"{subject} {modality}; bcdiag analyses mammograms (MG) and breast "
            "ultrasound (US) only."
        )
    raise reject("unsupported-modality", name, f"{text} Upload an MG or US image.")


def check_looks_like_modality(
    name: str, image: np.ndarray, modality: str | None, *, from_dicom: bool
) -> None:
    """The image must look like its modality (`bcdiag.scans.modality_check`)."""
    if modality not in ACCEPTED_MODALITIES:
        return
    reason = mismatch(image, modality)
    if reason is None:
        return
    if from_dicom:
        said = f"this DICOM file says it is {_MODALITY_NAMES[modality]}"
        advice = "Check that the right image was exported, with the right modality."
    else:
        said = f"it was given as {_MODALITY_NAMES[modality]}"
        other = "MG" if modality == "US" else "US"
        advice = f"Choose {_MODALITY_NAMES[other]} if that is what it is."
    raise reject("modality-mismatch", name, f"{said}, but the image {reason}. {advice}")


def check_presentation_intent(name: str, intent: str | None) -> None:
    """Raw detector ("For Processing") images are not what the models were trained on."""
    if intent == "FOR PROCESSING":
        raise reject(
            "for-processing",
            name,
            "this is a 'For Processing' image (raw detector data), which the models were "
            "not trained on. Upload the 'For Presentation' image from the PACS instead.",
        )


def check_single_frame(name: str, frames: int) -> None:
    """Tomosynthesis stacks and cine loops are not single 2-D images."""
    if frames != 1:
        raise reject(
            "multi-frame",
            name,
            f"this DICOM file holds {frames} frames (tomosynthesis or cine); bcdiag "
            "analyses single 2-D images. Upload one 2-D image (e.g. the 2-D or "
            "synthesised mammogram, or a single ultrasound frame).",
        )


def check_dimensions(
    name: str, rows: int, columns: int, frames: int, bits_allocated: int, samples: int
) -> None:
    """Budget (before decoding) and minimum size of the image the header declares."""
    settings = get_settings()
    pixels = rows * columns * frames
    decoded = pixels * samples * max(1, (bits_allocated + 7) // 8)
    if pixels > settings.max_pixels or decoded > settings.max_decoded_bytes:
        raise reject(
            "too-large",
            name,
            f"the header declares {rows} x {columns} pixels x {frames} frame(s) "
            f"({decoded:,} bytes decoded), over the limit of {settings.max_pixels:,} pixels "
            f"or {settings.max_decoded_bytes:,} bytes. Upload a single image of normal size.",
        )
    minimum = settings.min_side_px
    if rows < minimum or columns < minimum:
        raise reject(
            "too-small",
            name,
            f"the image is {rows} x {columns} pixels; at least {minimum} pixels per side "
            "are needed. Upload the full image, not a thumbnail or icon.",
        )


def check_native_length(name: str, expected: int, actual: int) -> None:
    """Uncompressed pixel data shorter than the header promises means a cut-off file."""
    if actual < expected:
        raise reject(
            "truncated",
            name,
            f"the file is truncated: the header promises {expected:,} bytes of pixel data "
            f"but only {actual:,} are present. Copy or export the file again.",
        )


def check_depth(name: str, depth: int) -> None:
    """Sequences nested deeper than any image header needs."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise nested_too_deep(name)


def nested_too_deep(name: str) -> ScanRejected:
    """The rejection for headers nested too deeply (also used when parsing recursed too far)."""
    return reject(
        "nested-too-deep",
        name,
        f"the DICOM header nests sequences more than {MAX_SEQUENCE_DEPTH} levels deep, "
        "which no image needs; the file is damaged or hostile. Export the image again.",
    )


def check_not_blank(name: str, image: np.ndarray) -> None:
    """Reject constant or near-constant images (see the module docstring)."""
    sample = image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)]
    low, high = np.percentile(sample, [1.0, 99.0])
    if float(np.ptp(image)) == 0.0 or float(high - low) < BLANK_SPREAD:
        raise reject(
            "blank-image",
            name,
            "the image is blank (nearly every pixel has the same value). Check that the "
            "right image was exported and upload it again.",
        )


def not_an_image(name: str) -> ScanRejected:
    """The rejection for content that is neither DICOM nor PNG nor JPEG."""
    return reject(
        "not-dicom-or-image",
        name,
        f"this is not a DICOM, PNG or JPEG file (the type is read from the content, not "
        f"the name). {_UPLOAD_HINT}",
    )
