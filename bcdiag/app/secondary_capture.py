"""The exam's results as DICOM Secondary Capture images, for a PACS: one RGB image per
analysed image (the scan with its heatmap burned in), in one new series of the exam's
study, under the exam's patient, with the score, call, model and disclaimer in the
header's comments. Written with pydicom; downloaded as one ZIP."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from bcdiag.app.report import DISCLAIMER
from bcdiag.storage.analysis_store import StoredAnalysis
from bcdiag.storage.worklist import ExamDetail, ExamImageEntry, ExamSummary

SERIES_DESCRIPTION = "bcdiag model heatmaps (decision support, not a diagnosis)"
SERIES_NUMBER = 9900  # far from a modality's own series numbers


def exam_secondary_captures(
    detail: ExamDetail, overlays: dict[int, bytes], *, created_at: datetime
) -> bytes:
    """A ZIP of one Secondary Capture file per analysed image of `detail`.

    Args:
        detail: the exam and its images, in the order they are hung.
        overlays: each analysed image's heatmap overlay PNG, by scan id.
        created_at: when; written as the instances' content date and time.
    """
    series_uid = generate_uid()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        analysed = [
            (image, image.analysis)
            for image in detail.images
            if image.analysis is not None and image.scan.id in overlays
        ]
        for number, (image, analysis) in enumerate(analysed, start=1):
            png = overlays[image.scan.id]
            dataset = _capture(detail.exam, image, analysis, png, series_uid, created_at)
            dataset.InstanceNumber = number
            written = io.BytesIO()
            dataset.save_as(written, enforce_file_format=True)
            archive.writestr(f"bcdiag-sc-{number:02d}.dcm", written.getvalue())
    return buffer.getvalue()


def _capture(
    exam: ExamSummary,
    image: ExamImageEntry,
    analysis: StoredAnalysis,
    png: bytes,
    series_uid: str,
    at: datetime,
) -> Dataset:
    with Image.open(io.BytesIO(png)) as opened:
        pixels = np.asarray(opened.convert("RGB"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        SecondaryCaptureImageStorage,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.PatientID = exam.patient_key
    ds.PatientName = exam.patient_name or ""
    ds.StudyInstanceUID = exam.study_instance_uid or generate_uid()
    ds.StudyDate = f"{exam.exam_date:%Y%m%d}"
    ds.AccessionNumber = exam.accession_number or ""
    ds.StudyDescription = exam.study_description or ""
    ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, SERIES_NUMBER
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.Modality = "OT"
    ds.ConversionType = "WSD"  # workstation
    ds.ImageLaterality = image.laterality or ""
    ds.ViewPosition = image.view or ""
    ds.ContentDate, ds.ContentTime = f"{at:%Y%m%d}", f"{at:%H%M%S}"
    ds.Manufacturer, ds.SoftwareVersions = (
        "bcdiag",
        f"{analysis.model_name} {analysis.model_version}",
    )
    ds.BurnedInAnnotation = "NO"  # the heatmap is colour, no text is drawn in the pixels
    ds.ImageComments = (
        f"{image.filename}: probability of malignancy {analysis.probability:.1%}, "
        f"{analysis.call} at threshold {analysis.threshold:.3f}; model {analysis.model_name} "
        f"version {analysis.model_version} (sha256 {analysis.model_sha256[:12]}). {DISCLAIMER}"
    )
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    return ds
