"""Who and which study a DICOM file belongs to: the header fields that group uploads.

Kept apart from `ScanMetadata`, which by design holds nothing that identifies a patient:
a `ScanIdentity` goes to storage to file the upload under its patient's case and exam,
and nowhere else. Its values are never logged; pydicom's warnings and value validation
(whose messages may quote them) are off while the header is read.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import date, datetime

import pydicom
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from bcdiag.scans.rules import LIBRARY_ERRORS, reject
from bcdiag.scans.sniff import sniff

LATERALITIES = frozenset({"L", "R", "B", "U"})
"""ImageLaterality's enumerated values: left, right, both, unpaired."""

_ERRORS: tuple[type[Exception], ...] = (*LIBRARY_ERRORS, InvalidDicomError, RecursionError)

_LIMITS = {"PN": 255, "UI": 64, "LO": 64, "SH": 16, "CS": 16}
"""Longest value kept per value representation (the standard's maxima; PN per group)."""


@dataclass(frozen=True)
class ScanIdentity:
    """The identifying header fields of one DICOM image; None where the header has none.

    ``laterality`` is ImageLaterality, else Laterality ("L", "R", "B" or "U");
    ``view`` is ViewPosition in upper case ("CC", "MLO", …) as the header says it.
    """

    patient_id: str | None
    patient_name: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    study_date: date | None
    accession_number: str | None
    study_description: str | None
    laterality: str | None
    view: str | None


def read_identity(data: bytes, name: str) -> ScanIdentity | None:
    """The identity in the header of ``data``; None for a PNG or JPEG file.

    Only the header is parsed (``stop_before_pixels``).

    Raises:
        ScanRejected: the file is not a DICOM, PNG or JPEG file, or its header is damaged.
    """
    if sniff(data, name) != "dicom":
        return None
    # pydicom's warnings and its logger's validation messages may quote patient data.
    # Validation is off for the read (a process-wide setting, restored at once).
    with warnings.catch_warnings(), config.disable_value_validation():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
            return _identity(ds)
        except _ERRORS:
            raise reject(
                "corrupt-header",
                name,
                "the DICOM header is damaged, so the patient and study cannot be read. "
                "Export the image again from the PACS or the scanner.",
            ) from None


def _identity(ds: Dataset) -> ScanIdentity:
    laterality = _text(ds, "ImageLaterality") or _text(ds, "Laterality")
    laterality = laterality.upper() if laterality else None
    view = _text(ds, "ViewPosition")
    return ScanIdentity(
        patient_id=_text(ds, "PatientID"),
        patient_name=_person_name(ds),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        study_date=_date(ds, "StudyDate"),
        accession_number=_text(ds, "AccessionNumber"),
        study_description=_text(ds, "StudyDescription"),
        laterality=laterality if laterality in LATERALITIES else None,
        view=view.upper() if view else None,
    )


def _text(ds: Dataset, keyword: str) -> str | None:
    """A printable, stripped value cut to its VR's maximum; None when absent or empty."""
    if keyword not in ds:
        return None
    element = ds[keyword]
    value = element.value
    if value is None or value == "":
        return None
    text = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    return text[: _LIMITS.get(element.VR, 64)] or None


def _person_name(ds: Dataset) -> str | None:
    """PatientName without its empty trailing components ("OB^^^^" is "OB")."""
    text = _text(ds, "PatientName")
    if text is None:
        return None
    return "=".join(group.rstrip("^ ") for group in text.split("=")).rstrip("= ") or None


def _date(ds: Dataset, keyword: str) -> date | None:
    """A DA value (YYYYMMDD); None when absent or not a valid date."""
    text = _text(ds, keyword)
    if text is None:
        return None
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None
