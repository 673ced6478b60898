"""Read one DICOM image into a `Scan` (pydicom 3 with its decoder plugins).

Decoders: RLE and deflate with pydicom alone, JPEG 2000 through pylibjpeg-openjpeg,
JPEG Lossless and JPEG-LS through python-gdcm (Apache-2.0; the GPL pylibjpeg-libjpeg is
deliberately not used, so 12-bit JPEG Extended is reported as unsupported).

Grey levels (`bcdiag.scans.intensity`): Modality LUT (rescale), then the first VOI LUT
or window when the header has one, mapped onto [0, 1] through its output range; without
a VOI, the range BitsStored can hold maps to [0, 1] (never the image's own minimum and
maximum). MONOCHROME1 is inverted so that bright is always dense. Colour (RGB, YBR,
PALETTE COLOR; ultrasound) becomes BT.601 luminance over the container's full scale.
Header values are never logged; the metadata keeps only the fields of `ScanMetadata`.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator

import numpy as np
import pydicom
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.tag import BaseTag
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    MediaStorageDirectoryStorage,
)

from bcdiag.errors import ScanRejected
from bcdiag.scans import rules
from bcdiag.scans.intensity import luminance, unit_range
from bcdiag.scans.rules import LIBRARY_ERRORS, reject
from bcdiag.scans.types import Scan, ScanMetadata

_ERRORS: tuple[type[Exception], ...] = (*LIBRARY_ERRORS, BytesLengthException, InvalidDicomError)
_TEXT_LIMIT = 64
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
_UNDEFINED_LENGTH = 0xFFFFFFFF
# GDCM aborts the whole process on some malformed JPEG 2000 codestreams, so JPEG 2000 goes
# to pylibjpeg-openjpeg, which reports them as errors.
_PREFERRED_PLUGIN = {
    uid: "pylibjpeg"
    for uid in (JPEG2000, JPEG2000Lossless, HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL)
}
_EXPORT_AGAIN = "Export the image again from the PACS or the scanner."


def read_dicom(data: bytes, name: str, modality_hint: str | None) -> Scan:
    """Parse, check (before decoding), decode and normalise one DICOM image.

    ``modality_hint`` is used only when the file has no Modality.

    Raises:
        ScanRejected: the file breaks a rule of `bcdiag.scans.rules` or cannot be decoded.
    """
    with _reading(name):
        dataset = _parse(data, name)
        metadata = _check_header(dataset, name, modality_hint)
        pixels, photometric = _decode(dataset, name)
        image = _to_unit_grey(dataset, pixels, photometric, name)
    rules.check_not_blank(name, image)
    return Scan(image=image, metadata=metadata)


def read_dicom_values(data: bytes, name: str) -> tuple[np.ndarray, Dataset]:
    """A greyscale image's values after the Modality LUT (rescale), in the file's own
    units, and its header: for display (`bcdiag.scans.display`), which windows them itself.

    The same parsing, rules and decoders as `read_dicom`; no VOI, no scaling, no inversion.

    Raises:
        ScanRejected: as `read_dicom`, and ``unsupported-photometric`` for colour images.
    """
    with _reading(name):
        dataset = _parse(data, name)
        _check_header(dataset, name, None)
        pixels, photometric = _decode(dataset, name)
        if pixels.ndim != 2 or photometric not in _GREYSCALE:
            raise _unsupported_photometric(name, photometric)
        values = apply_modality_lut(pixels, dataset)
    return np.asarray(values, dtype=np.float32), dataset


@contextlib.contextmanager
def _reading(name: str) -> Iterator[None]:
    """Header warnings silenced; a library's failure on a damaged header as a rejection."""
    with warnings.catch_warnings():
        # pydicom's warnings may quote header values (patient data among them).
        warnings.simplefilter("ignore")
        try:
            yield
        except RecursionError:
            raise rules.nested_too_deep(name) from None
        except _ERRORS:
            raise _corrupt_header(name) from None


def _parse(data: bytes, name: str) -> FileDataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        # Headerless (ACR-NEMA style) files: record the encoding pydicom detected, which
        # the pixel decoders need.
        ds.file_meta.TransferSyntaxUID = _transfer_syntax(ds)
    except RecursionError:
        raise rules.nested_too_deep(name) from None
    except EOFError:
        raise reject(
            "truncated", name, f"the DICOM file ends in the middle of its header. {_EXPORT_AGAIN}"
        ) from None
    except _ERRORS:
        raise _corrupt_header(name) from None
    if _ends_inside_an_element(ds, len(data)):
        raise reject(
            "truncated",
            name,
            f"the DICOM file is cut off: it ends in the middle of its data. {_EXPORT_AGAIN}",
        )
    return ds


def _ends_inside_an_element(ds: FileDataset, size: int) -> bool:
    """Whether the file stops inside an element, which pydicom reads without an error.

    pydicom keeps a cut-off last value short, silently drops a cut-off element header,
    and returns an empty dataset when the file ends inside a value of undefined length
    (encapsulated pixel data); which elements are present says nothing about a cut.
    """
    elements = list(ds.elements())
    if not elements:
        return True
    last = elements[-1]
    if not isinstance(last, RawDataElement) or last.length == _UNDEFINED_LENGTH:
        return False
    if last.value is not None and len(last.value) < last.length:
        return True
    # Offsets are in the inflated stream for deflated files, so only those skip this.
    deflated = _transfer_syntax(ds) == DeflatedExplicitVRLittleEndian
    return not deflated and last.value_tell + last.length < size


def _corrupt_header(name: str) -> ScanRejected:
    return reject(
        "corrupt-header",
        name,
        f"the DICOM header is damaged (a required value is missing or invalid). {_EXPORT_AGAIN}",
    )


def _check_header(ds: FileDataset, name: str, modality_hint: str | None) -> ScanMetadata:
    """Every rule that can be decided from the header, in the order users can act on."""
    sop_class = ds.file_meta.get("MediaStorageSOPClassUID")
    if sop_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
        raise reject(
            "dicomdir",
            name,
            "this is a DICOMDIR (the index of a CD or folder), not an image. "
            "Upload one of the image files it lists instead.",
        )
    rules.check_depth(name, _sequence_depth(ds))
    if "PixelData" not in ds:  # a cut-off file was rejected by `_parse`
        raise reject(
            "no-pixel-data",
            name,
            "this DICOM file holds no image (no Pixel Data), e.g. a report or a "
            "presentation state. Upload the image itself.",
        )
    dicom_modality = _code(ds, "Modality")
    rules.check_modality(name, dicom_modality or modality_hint, from_dicom=bool(dicom_modality))
    intent = _code(ds, "PresentationIntentType")
    rules.check_presentation_intent(name, intent)
    rows, columns = _positive_int(ds, "Rows"), _positive_int(ds, "Columns")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames < 1:
        raise ValueError("NumberOfFrames must be positive")
    rules.check_single_frame(name, frames)
    bits_allocated, samples = (
        _positive_int(ds, "BitsAllocated"),
        _positive_int(ds, "SamplesPerPixel"),
    )
    rules.check_dimensions(name, rows, columns, frames, bits_allocated, samples)
    _check_pixel_encoding(ds, name, rows * columns * frames * samples, bits_allocated)
    return ScanMetadata(
        format="dicom",
        modality=dicom_modality or modality_hint,
        laterality=_code(ds, "ImageLaterality") or _code(ds, "Laterality"),
        view=_code(ds, "ViewPosition"),
        photometric_interpretation=str(ds.PhotometricInterpretation),
        bits_stored=int(ds.get("BitsStored") or bits_allocated),
        rows=rows,
        columns=columns,
        pixel_spacing_mm=_spacing(ds),
        presentation_intent=intent,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        manufacturer=_text(ds, "Manufacturer"),
    )


def _sequence_depth(ds: Dataset) -> int:
    """How deep sequences nest, walked without recursion and stopping past the limit."""
    deepest = 0
    stack = [(ds, 0)]
    while stack and deepest <= rules.MAX_SEQUENCE_DEPTH:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        for raw in current.elements():
            if _is_sequence(raw.tag, raw.VR):
                stack.extend((item, depth + 1) for item in current[raw.tag].value)
    return deepest


def _is_sequence(tag: BaseTag, vr: str | None) -> bool:
    if vr is not None:
        return vr == "SQ"
    # Implicit VR: the data dictionary knows; private and unknown tags stay bytes.
    return dictionary_has_tag(tag) and dictionary_VR(tag) == "SQ"


def _transfer_syntax(ds: FileDataset) -> UID:
    """The file's transfer syntax, or the encoding pydicom found for a file without one."""
    uid = ds.file_meta.get("TransferSyntaxUID")
    if uid:
        return UID(str(uid))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _check_pixel_encoding(
    ds: FileDataset, name: str, samples_total: int, bits_allocated: int
) -> None:
    """A decoder exists for the transfer syntax; native pixel data is as long as declared."""
    uid = _transfer_syntax(ds)
    unsupported = reject(
        "unsupported-transfer-syntax",
        name,
        f"the image is encoded as '{uid.name}', which bcdiag cannot decode. Export it "
        "uncompressed, or as JPEG 2000, JPEG Lossless, JPEG-LS or RLE.",
    )
    if not uid.is_transfer_syntax:
        raise unsupported
    if not uid.is_encapsulated:
        expected = math.ceil(samples_total * bits_allocated / 8)
        rules.check_native_length(name, expected, len(ds.PixelData))
        return
    if uid == JPEGExtended12Bit and int(ds.get("BitsStored") or 8) > 8:
        raise unsupported
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise unsupported from None
    if not decoder.is_available:
        raise unsupported


def _decode(ds: FileDataset, name: str) -> tuple[np.ndarray, str]:
    """The pixel array (colour already converted to RGB) and its photometric interpretation."""
    try:
        decoder = get_decoder(_transfer_syntax(ds))
        # pydicom annotates **kwargs as DecodeOptions instead of Unpack[DecodeOptions].
        pixels, info = decoder.as_array(
            ds,
            as_rgb=True,  # type: ignore[arg-type]
            decoding_plugin=_PREFERRED_PLUGIN.get(decoder.UID, ""),
        )
    except _ERRORS:
        raise reject(
            "corrupt-pixel-data",
            name,
            f"the image data could not be decoded; the file is damaged. {_EXPORT_AGAIN}",
        ) from None
    return pixels, str(info["photometric_interpretation"])


def _to_unit_grey(ds: Dataset, pixels: np.ndarray, photometric: str, name: str) -> np.ndarray:
    """Float32 (rows, columns) in [0, 1], bright = dense tissue / strong echo."""
    if pixels.ndim == 3 and photometric == "RGB":
        return unit_range(luminance(pixels), 0.0, 2.0 ** _bits_stored(ds) - 1)
    if pixels.ndim == 2 and photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return unit_range(luminance(rgb), 0.0, float(np.iinfo(rgb.dtype).max))
    if pixels.ndim != 2 or photometric not in _GREYSCALE:
        raise _unsupported_photometric(name, photometric)
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds, index=0)
    if not np.isfinite(values).all():
        raise ValueError("rescale or window produced non-finite values")
    grey = unit_range(values, *_display_range(ds))
    return 1.0 - grey if photometric == "MONOCHROME1" else grey


def _unsupported_photometric(name: str, photometric: str) -> ScanRejected:
    return reject(
        "unsupported-photometric",
        name,
        f"the image's colour model '{photometric[:_TEXT_LIMIT]}' is not supported. "
        "Export it as greyscale (MONOCHROME1/2), RGB or palette colour.",
    )


def _display_range(ds: Dataset) -> tuple[float, float]:
    """The values `apply_voi_lut` puts out for the darkest and the brightest display.

    A VOI LUT puts out its own range (LUTDescriptor bits); a window, or no VOI at all,
    the range the stored bits can hold after the Modality LUT (as in pydicom's
    `apply_windowing`), so a DICOM's values are never stretched to its own extremes.
    """
    voi = ds.get("VOILUTSequence")
    if voi and None not in (voi[0].get("LUTDescriptor"), voi[0].get("LUTData")):
        return 0.0, 2.0 ** int(voi[0].LUTDescriptor[2]) - 1
    modality_lut = ds.get("ModalityLUTSequence")
    if modality_lut:
        return 0.0, 2.0 ** int(modality_lut[0].LUTDescriptor[2]) - 1
    bits = _bits_stored(ds)
    low, high = 0, 2**bits - 1
    if ds.get("PixelRepresentation"):  # signed
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None or intercept is None:
        return float(low), float(high)
    return low * float(slope) + float(intercept), high * float(slope) + float(intercept)


def _bits_stored(ds: Dataset) -> int:
    return int(ds.get("BitsStored") or ds.BitsAllocated)


def _positive_int(ds: Dataset, keyword: str) -> int:
    value = int(ds[keyword].value)
    if value <= 0:
        raise ValueError(f"{keyword} must be positive")
    return value


def _text(ds: Dataset, keyword: str) -> str | None:
    """A short, printable text value, or None when absent or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    text = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
    return "".join(ch for ch in text if ch.isprintable()).strip()[:_TEXT_LIMIT] or None


def _code(ds: Dataset, keyword: str) -> str | None:
    """A code string (CS) value in upper case, or None."""
    text = _text(ds, keyword)
    return text.upper() if text else None


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """Detector (ImagerPixelSpacing) or patient (PixelSpacing) spacing in mm.

    A value that is not two positive finite numbers says nothing usable and counts as absent.
    """
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = ds.get(keyword)
        if isinstance(value, MultiValue) and len(value) == 2:
            row, column = float(value[0]), float(value[1])
            if all(math.isfinite(v) and v > 0 for v in (row, column)):
                return (row, column)
    return None
