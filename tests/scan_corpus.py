"""A corpus of malformed (and a few tricky but valid) scan files, built from real data.

Every case is made in memory from a file of the shared data folder, so nothing derived
from it is written into the repository. `build_corpus` returns them keyed by case id;
``code`` is the rejection expected, or None when the file must be accepted.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence

MG_FILE = "dicom/derived/cbisddsm_Mass-Test_P_00173_LEFT_CC_benign_quarter.dcm"
US_J2K_FILE = "dicom/US1_J2KR.dcm"
PNG_FILE = "mias/png512/mdb001.png"


@dataclass(frozen=True)
class Case:
    """One corpus file: its upload name, bytes, expected code and optional modality hint."""

    name: str
    data: bytes
    code: str | None
    modality: str | None = None


def dicom_bytes(ds: Dataset) -> bytes:
    """``ds`` written as a DICOM file (with preamble and file meta)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def native_mg(data_dir: Path) -> Dataset:
    """The derived CBIS-DDSM mammogram, decompressed to Explicit VR Little Endian."""
    ds = pydicom.dcmread(data_dir / MG_FILE)
    ds.decompress()
    return ds


def png_bytes(array: np.ndarray) -> bytes:
    """A greyscale PNG of ``array`` (uint8 or uint16) written by Pillow."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_png(width: int, height: int, rows: int) -> bytes:
    """An 8-bit greyscale PNG declaring ``width`` x ``height`` but holding ``rows`` zero rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    compressor = zlib.compressobj(9)
    line = b"\0" * (width + 1)
    idat = b"".join(compressor.compress(line) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _edit(**attributes: object) -> Callable[[Dataset], None]:
    """A change that sets DICOM attributes by keyword."""

    def change(ds: Dataset) -> None:
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)

    return change


def _with(data_dir: Path, change: Callable[[Dataset], None]) -> bytes:
    ds = native_mg(data_dir)
    change(ds)
    return dicom_bytes(ds)


def _replace_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.astype(np.uint16).tobytes()


def _nested(data_dir: Path, depth: int, *, undefined_length: bool) -> bytes:
    """The mammogram with a ReferencedImageSequence nested ``depth`` levels deep."""
    ds = native_mg(data_dir)
    item = Dataset()
    item.CodeValue = "PLACEHOLDER1"
    ds.ReferencedImageSequence = Sequence([item])
    data = dicom_bytes(ds)
    tag = struct.pack("<HH", 0x0008, 0x1140) + b"SQ"
    leaf = struct.pack("<HH", 0x0008, 0x0100) + b"SH" + struct.pack("<H", 12) + b"PLACEHOLDER1"
    start, end = data.index(tag), data.index(leaf) + len(leaf)
    body = leaf
    for _ in range(depth):
        if undefined_length:
            item_bytes = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + body
            item_bytes += struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            body = tag + b"\0\0" + struct.pack("<I", 0xFFFFFFFF) + item_bytes
            body += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        else:
            item_bytes = struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
            body = tag + b"\0\0" + struct.pack("<I", len(item_bytes)) + item_bytes
    return data[:start] + body + data[end:]


def _odd_length_rows(data_dir: Path) -> bytes:
    """Rows (VR US, always 2 bytes) encoded with 3 bytes: pydicom's BytesLengthException."""
    data = dicom_bytes(native_mg(data_dir))
    rows = struct.pack("<HH", 0x0028, 0x0010) + b"US"
    at = data.index(rows + struct.pack("<H", 2))
    odd = rows + struct.pack("<H", 3) + data[at + 8 : at + 10] + b"\0"
    return data[:at] + odd + data[at + 10 :]


def _headerless(data_dir: Path) -> bytes:
    """The mammogram as implicit VR with neither preamble nor file meta (ACR-NEMA style)."""
    ds = native_mg(data_dir)
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def _corrupt_j2k(data_dir: Path) -> bytes:
    """The J2K ultrasound with its SIZ marker segment overwritten."""
    ds = pydicom.dcmread(data_dir / US_J2K_FILE)
    frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    ds.PixelData = encapsulate([frame[:4] + b"\xff" * 40 + frame[44:]])
    return dicom_bytes(ds)


def _dicomdir(data_dir: Path, folder: Path) -> bytes:
    fileset = FileSet()
    fileset.add(pydicom.dcmread(data_dir / MG_FILE))
    fileset.write(folder)
    return (folder / "DICOMDIR").read_bytes()


def _strip_image(ds: Dataset) -> None:
    """Remove the Image Pixel module, as in a report or presentation state."""
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)


def _multi_frame(ds: Dataset) -> None:
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2


def build_corpus(data_dir: Path, scratch: Path) -> dict[str, Case]:
    """Every corpus case by id; ``scratch`` is an empty folder for the DICOMDIR writer."""
    mg = (data_dir / MG_FILE).read_bytes()
    png = (data_dir / PNG_FILE).read_bytes()
    native = dicom_bytes(native_mg(data_dir))
    random_bytes = b"\x13\x37" + np.random.default_rng(7).bytes(4094)
    spot = np.zeros((300, 300), np.uint16)
    spot[10:14, 10:14] = 4000
    cases = [
        Case("empty.dcm", b"", "empty-file"),
        Case("random.dcm", random_bytes, "not-dicom-or-image"),
        Case("notes.png", b"Clinical notes, not an image.\n" * 20, "not-dicom-or-image"),
        Case("mdb001.dcm", png, None),
        Case("mammogram.png", mg, None),
        Case("no_preamble.dcm", mg[132:], None),
        Case("headerless.dcm", _headerless(data_dir), None),
        Case("truncated.dcm", native[: len(native) - 100_000], "truncated"),
        Case("lying.dcm", _with(data_dir, _edit(Rows=60000, Columns=60000)), "too-large"),
        Case("nested300.dcm", _nested(data_dir, 300, undefined_length=True), "nested-too-deep"),
        Case("nested40.dcm", _nested(data_dir, 40, undefined_length=False), "nested-too-deep"),
        Case("corrupt_j2k.dcm", _corrupt_j2k(data_dir), "corrupt-pixel-data"),
        Case("bomb.png", raw_png(200_000, 200_000, 4), "decompression-bomb"),
        Case("DICOMDIR", _dicomdir(data_dir, scratch), "dicomdir"),
        Case("ct.dcm", (data_dir / "dicom/CT_small.dcm").read_bytes(), "unsupported-modality"),
        Case("mr.dcm", _with(data_dir, _edit(Modality="MR")), "unsupported-modality"),
        Case(
            "blank.dcm",
            _with(data_dir, lambda d: _replace_pixels(d, np.full((300, 300), 1000))),
            "blank-image",
        ),
        Case("spot.dcm", _with(data_dir, lambda d: _replace_pixels(d, spot)), "blank-image"),
        Case("multi.dcm", _with(data_dir, _multi_frame), "multi-frame"),
        Case(
            "raw.dcm",
            _with(data_dir, _edit(PresentationIntentType="FOR PROCESSING")),
            "for-processing",
        ),
        Case(
            "tiny.dcm",
            _with(data_dir, lambda d: _replace_pixels(d, np.arange(400).reshape(20, 20))),
            "too-small",
        ),
        Case("tiny.png", png_bytes(np.arange(256, dtype=np.uint8).reshape(16, 16)), "too-small"),
        Case("sr.dcm", _with(data_dir, _strip_image), "no-pixel-data"),
        Case("no_pixels.dcm", _with(data_dir, lambda d: delattr(d, "PixelData")), "no-pixel-data"),
        Case("cut_rle.dcm", mg[: len(mg) - 1000], "truncated"),  # inside encapsulated pixels
        Case("cut_in_header.dcm", mg[:1000], "truncated"),
        Case("jpeg12.dcm", _jpeg12_as_mg(data_dir), "unsupported-transfer-syntax"),
        Case("cut.png", png[: len(png) // 2], "truncated"),
        Case(
            "window0.dcm",
            _with(data_dir, _edit(WindowCenter=1000, WindowWidth=0)),
            "corrupt-header",
        ),
        Case("photo.png", png, "unsupported-modality", modality="CT"),
        Case("odd_length.dcm", _odd_length_rows(data_dir), "corrupt-header"),
        Case("rows0.dcm", _with(data_dir, _edit(Rows=0)), "corrupt-header"),
    ]
    return {case.name: case for case in cases}


def _jpeg12_as_mg(data_dir: Path) -> bytes:
    ds = pydicom.dcmread(data_dir / "dicom/JPGExtended.dcm")
    ds.Modality = "MG"
    return dicom_bytes(ds)
