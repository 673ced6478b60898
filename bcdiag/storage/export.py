"""De-identified export of every stored scan, for research use outside the clinic.

DICOM files go through dicognito (names, IDs, UIDs, dates and addresses
replaced; one pseudonym per patient within one export, new ones next export),
after we drop private elements, overlays and free-text elements that PS3.15's
Basic Profile removes. Pixels and Modality are kept as they are, so a file whose
pixels may show text (BurnedInAnnotation YES, or absent on a modality or SOP
class that usually burns text in) is withheld and reported, never exported.
PNG and JPEG files are re-saved as bare pixels (no text, EXIF or ICC data). Only the
files and a manifest of their hashes leave: the cases and exams tables (PatientIDs,
names, study UIDs, accession numbers, clinicians' case names) are never exported.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

import pydicom
from dicognito.anonymizer import Anonymizer
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

from bcdiag.errors import BcdiagError, StorageError
from bcdiag.storage import Storage, StoredScan

Status = Literal["exported", "withheld", "failed"]

TEXT_IN_PIXELS_MODALITIES = frozenset({"US", "OT", "XC", "ES", "SC", "DOC"})
"""Modalities whose images commonly carry burned-in text (e.g. ultrasound captions)."""

SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        SecondaryCaptureImageStorage,
        MultiFrameSingleBitSecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    }
)
"""Screen grabs and scanned film: the pixels may hold anything, labels included."""

FREE_TEXT_REMOVED = frozenset(
    pydicom.datadict.tag_for_keyword(keyword)
    for keyword in (
        "AcquisitionComments",
        "AdditionalPatientHistory",
        "AdmittingDiagnosesDescription",
        "Allergies",
        "ContentSequence",
        "DerivationDescription",
        "FrameComments",
        "IdentifyingComments",
        "ImageComments",
        "ImagingServiceRequestComments",
        "InterpretationText",
        "MedicalAlerts",
        "PatientComments",
        "PerformedProcedureStepDescription",
        "ProtocolName",
        "RequestAttributesSequence",
        "RequestedProcedureComments",
        "SeriesDescription",
        "StudyComments",
        "StudyDescription",
        "TextComments",
        "VisitComments",
    )
)
"""Free text that PS3.15 Table E.1-1 removes and dicognito leaves alone."""

MANIFEST_FIELDS = ("sha256", "file", "status", "reason")


@dataclass(frozen=True)
class ExportedScan:
    """One manifest line: what happened to one stored scan."""

    sha256: str
    file: str
    status: Status
    reason: str


class Withheld(BcdiagError):
    """A scan must not leave de-identified; the message says why."""


def burned_in_annotation_risk(dataset: Dataset) -> str | None:
    """Why the pixels of ``dataset`` may show identifying text, or None if they should not."""
    flag = str(dataset.get("BurnedInAnnotation", "")).strip().upper()
    if flag == "NO":
        return None
    if flag == "YES":
        return "BurnedInAnnotation is YES: the pixels carry text"
    if flag:
        return f"BurnedInAnnotation has the unexpected value {flag!r}"
    modality = str(dataset.get("Modality", "")).upper()
    if modality in TEXT_IN_PIXELS_MODALITIES:
        return f"modality {modality} often has burned-in text and BurnedInAnnotation is absent"
    if str(dataset.get("SOPClassUID", "")) in SECONDARY_CAPTURE_CLASSES:
        return "secondary capture (screen grab or scanned film) without BurnedInAnnotation"
    return None


def _is_curve_or_overlay(group: int) -> bool:
    # Repeating groups 5000-501E (curves) and 6000-601E (overlays), even numbers only.
    return group & 0xFF00 in (0x5000, 0x6000) and group & 0xFF <= 0x1E and group % 2 == 0


def _drop_text_and_overlays(dataset: Dataset, element: DataElement) -> None:
    if element.tag in FREE_TEXT_REMOVED or _is_curve_or_overlay(element.tag.group):
        del dataset[element.tag]


def deidentify_dicom(data: bytes, anonymizer: Anonymizer) -> bytes:
    """The DICOM file ``data`` de-identified; `Withheld` if it cannot be made safe."""
    try:
        dataset = pydicom.dcmread(BytesIO(data))
    except InvalidDicomError as exc:
        raise Withheld(f"not a DICOM Part 10 file: {exc}") from exc
    risk = burned_in_annotation_risk(dataset)
    if risk:
        raise Withheld(risk)
    dataset.remove_private_tags()
    dataset.walk(_drop_text_and_overlays)
    anonymizer.anonymize(dataset)
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _image_suffix(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    return None


def strip_image_metadata(data: bytes) -> bytes:
    """The decoded pixels of a PNG/JPEG re-saved as PNG with no text, EXIF or ICC data.

    Text chunks and EXIF can carry names and dates; PNG keeps the decoded pixels exactly.
    """
    with Image.open(BytesIO(data)) as image:
        image.load()
        pixels = Image.frombytes(image.mode, image.size, image.tobytes())
    buffer = BytesIO()
    pixels.save(buffer, format="PNG")
    return buffer.getvalue()


def _export_one(storage: Storage, scan: StoredScan, out: Path, anonymizer: Anonymizer) -> str:
    """Write one scan under ``out``; returns the file name."""
    data = storage.scan_bytes(scan)
    if _image_suffix(data) is None:
        data, suffix = deidentify_dicom(data, anonymizer), ".dcm"
    else:
        data, suffix = strip_image_metadata(data), ".png"
    name = scan.sha256 + suffix
    (out / name).write_bytes(data)
    return name


def export_deidentified(storage: Storage, out: Path, *, user: str) -> list[ExportedScan]:
    """Export every stored scan, de-identified, to the new or empty folder ``out``.

    Writes ``out/manifest.csv`` (sha256, file, status, reason) and records a
    ``scans.exported`` audit event. A scan that cannot be read is reported as
    ``failed``; the others are still exported.
    """
    if out.exists() and any(out.iterdir()):
        raise BcdiagError(f"{out} is not empty: export into a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    anonymizer = Anonymizer()
    results: list[ExportedScan] = []
    for scan in storage.list_scans():
        try:
            name = _export_one(storage, scan, out, anonymizer)
        except Withheld as exc:
            results.append(ExportedScan(scan.sha256, "", "withheld", str(exc)))
        except StorageError as exc:
            results.append(ExportedScan(scan.sha256, "", "failed", str(exc)))
        else:
            results.append(ExportedScan(scan.sha256, name, "exported", ""))
    _write_manifest(out / "manifest.csv", results)
    storage.record_audit(
        user=user,
        action="scans.exported",
        target=str(out.resolve()),
        details={status: count(results, status) for status in ("exported", "withheld", "failed")},
    )
    return results


def count(results: Iterable[ExportedScan], status: Status) -> int:
    """How many of ``results`` have ``status``."""
    return sum(1 for result in results if result.status == status)


def _write_manifest(path: Path, results: list[ExportedScan]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_FIELDS)
        for result in results:
            writer.writerow([result.sha256, result.file, result.status, result.reason])
