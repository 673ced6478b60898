"""Decide a file's type from its first bytes, never from its name."""

from __future__ import annotations

from typing import Literal

from bcdiag.scans.rules import check_not_empty, not_an_image

Kind = Literal["dicom", "png", "jpeg"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# A DICOM file without the 128-byte preamble starts with its first element's tag:
# group 0002 (file meta) or 0008 (identifying attributes), little endian.
_BARE_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00")


def sniff(data: bytes, name: str) -> Kind:
    """The kind of content in ``data``.

    Raises:
        ScanRejected: ``empty-file`` or ``not-dicom-or-image``.
    """
    check_not_empty(name, data)
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 8 and data[:2] in _BARE_DICOM_GROUPS:
        return "dicom"
    raise not_an_image(name)
