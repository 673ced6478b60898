"""`read_scan`: one file's bytes to a validated `Scan`, in this process; `read_upload`
adds the check that an upload looks like its modality."""

from __future__ import annotations

from bcdiag.scans import rules
from bcdiag.scans.dicom import read_dicom
from bcdiag.scans.raster import read_raster
from bcdiag.scans.sniff import sniff
from bcdiag.scans.types import Scan


def read_scan(data: bytes, name: str, *, modality: str | None = None) -> Scan:
    """Read and validate one scan; the type comes from the content, never from ``name``.

    Args:
        data: the file's bytes.
        name: the file's name, used only in messages.
        modality: the caller's hint ("MG" or "US") for PNG/JPEG, and for DICOM files
            without a Modality; a DICOM Modality always wins over the hint.

    Raises:
        ScanRejected: the file is not an acceptable scan (see `bcdiag.scans.rules`).
    """
    kind = sniff(data, name)
    rules.check_file_size(name, len(data))
    hint = (modality.strip().upper() or None) if modality else None
    if kind == "dicom":
        return read_dicom(data, name, hint)
    rules.check_modality(name, hint, from_dicom=False)
    return read_raster(data, name, kind, hint)


def read_upload(data: bytes, name: str, *, modality: str | None = None) -> Scan:
    """`read_scan`, then the check that the image looks like its modality.

    Only uploads are checked: the public training sets are labelled by their makers.

    Raises:
        ScanRejected: as `read_scan`, or ``modality-mismatch``.
    """
    scan = read_scan(data, name, modality=modality)
    meta = scan.metadata
    rules.check_looks_like_modality(
        name, scan.image, meta.modality, from_dicom=meta.format == "dicom"
    )
    return scan
