"""Screening exams built from the real derived CBIS-DDSM mammograms by rewriting headers.

`four_views` gives one patient's study as four DICOM files (RCC, LCC, RMLO, LMLO): the
two derived mammograms, each under two views, with the patient, study, series and view
attributes set as a screening unit would write them. Pixels are left as they are.
`store_dicom` stores one as the app does; `analyse` records an analysis without a model.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from scan_corpus import dicom_bytes

from bcdiag.scans.identity import read_identity
from bcdiag.storage import Storage, StoredScan
from bcdiag.storage.analysis_store import NewAnalysis, StoredAnalysis

VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
MG = {"format": "dicom", "modality": "MG"}


def derived_mammograms(data_dir: Path) -> list[Path]:
    """The two derived CBIS-DDSM mammograms of the shared data."""
    return sorted((data_dir / "dicom" / "derived").glob("cbisddsm_*.dcm"))


def four_views(
    data_dir: Path,
    *,
    patient_id: str | None,
    patient_name: str = "DOE^JANE",
    study_uid: str | None = None,
    study_date: date = date(2026, 3, 2),
    accession: str = "ACC-0001",
) -> dict[str, bytes]:
    """``{"RCC": bytes, "LCC": …, "RMLO": …, "LMLO": …}`` of one study.

    ``patient_id`` None removes PatientID (an export stripped of it).
    """
    sources = derived_mammograms(data_dir)
    study_uid = study_uid or generate_uid()
    files = {}
    for index, (side, view) in enumerate(VIEWS):
        ds = pydicom.dcmread(sources[index % 2])
        if patient_id is None:
            del ds.PatientID
        else:
            ds.PatientID = patient_id
        ds.PatientName = patient_name
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = f"{study_date:%Y%m%d}"
        ds.AccessionNumber = accession
        ds.StudyDescription = "Screening mammography"
        ds.ImageLaterality = side
        ds.ViewPosition = view
        files[side + view] = dicom_bytes(ds)
    return files


def store_dicom(storage: Storage, data: bytes, name: str, user: str = "alice") -> StoredScan:
    """``data`` stored as the app stores an accepted DICOM: with its header's identity."""
    return storage.store_scan(
        data,
        filename=name,
        metadata=MG,
        user=user,
        identity=read_identity(data, name),
        case_name="Case A",
    )


def analyse(
    storage: Storage, scan_id: int, probability: float, user: str = "alice"
) -> StoredAnalysis:
    """An analysis recorded straight into storage (no model needed)."""
    return storage.record_analysis(
        NewAnalysis(
            scan_id=scan_id, user=user, model_name="bcdiag-mg", model_version="1",
            model_sha256="c" * 64, probability=probability, threshold=0.5,
            call="suspicious" if probability >= 0.5 else "not suspicious", heatmap_png=None,
        )
    )  # fmt: skip
