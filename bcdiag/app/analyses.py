"""One upload from file to stored analysis, with the audit trail the clinician app needs.

`analyse_upload` never raises for a bad file or a modality without a model: it
returns an `AnalysisRejected` with a plain sentence. The order of work keeps the
stores consistent: a rejected file stores nothing; an accepted one is stored
before it is scored (so a scan without a model is kept, listed in its uploader's
history, and analysed later with `analyse_stored`); the heatmap blob is written
before the analysis row that names it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from bcdiag.scans import Scan, judge
from bcdiag.serving.heatmaps import overlay_png
from bcdiag.serving.inference import ModelRef, NoModelError, Prediction, Predictor
from bcdiag.storage import Storage, StoredScan
from bcdiag.storage.analysis_store import NewAnalysis, StoredAnalysis

NO_MODEL = "no-model"
"""`AnalysisRejected.code` of a valid scan whose modality has no champion model yet."""


@dataclass(frozen=True)
class AnalysisAccepted:
    """A scored upload: the stored analysis, the prediction, and the images to show.

    ``image_png`` is the upload as shown (`Prediction.display`: whole, aspect kept, at
    most 1024 px, bright tissue on dark); ``heatmap_png`` is the Grad-CAM overlay on it.
    """

    analysis: StoredAnalysis
    prediction: Prediction
    image_png: bytes
    heatmap_png: bytes
    ok: Literal[True] = True


@dataclass(frozen=True)
class AnalysisRejected:
    """An upload that was not analysed: a stable ``code`` and a sentence for people.

    ``scan`` is the stored scan when the file was valid but had no model (``no-model``).
    """

    file: str
    code: str
    message: str
    scan: StoredScan | None = None
    ok: Literal[False] = False


AnalysisOutcome = AnalysisAccepted | AnalysisRejected


def analyse_upload(
    storage: Storage,
    predictor: Predictor,
    data: bytes,
    filename: str,
    *,
    user: str,
    modality: str | None,
) -> AnalysisOutcome:
    """Validate, store, score and record one uploaded file.

    Args:
        storage: where the scan, heatmap, analysis and audit events go.
        predictor: scores with the champion of the scan's modality.
        data: the uploaded file, unchanged.
        filename: the name the user gave it (shown back, never interpreted).
        user: the clinician uploading.
        modality: ``"US"`` or ``"MG"`` for PNG and JPEG files; DICOM names its own.

    Raises:
        StorageError: the database or blob store failed.
        RegistryUnavailable: the model registry failed or did not answer in time.
    """
    verdict = judge(data, filename, modality=modality)
    if verdict.scan is None:
        code = verdict.code or "rejected"
        storage.record_audit(
            user=user,
            action="upload.rejected",
            target="upload",
            details={"filename": filename, "code": code},
        )
        return AnalysisRejected(filename, code, verdict.message)
    metadata = verdict.scan.metadata
    scan = storage.store_scan(data, filename=filename, metadata=metadata.as_dict(), user=user)
    return _score(storage, predictor, verdict.scan, scan, filename, user)


def analyse_stored(
    storage: Storage, predictor: Predictor, scan: StoredScan, filename: str, *, user: str
) -> AnalysisOutcome:
    """Analyse a scan stored earlier without an analysis (e.g. before its model existed).

    The stored file is read again as it was at upload, with the modality it was
    accepted as; nothing new is stored but the analysis.
    """
    verdict = judge(storage.scan_bytes(scan), filename, modality=scan.modality)
    if verdict.scan is None:  # accepted once; rules may have changed since
        return AnalysisRejected(filename, verdict.code or "rejected", verdict.message, scan)
    return _score(storage, predictor, verdict.scan, scan, filename, user)


def _score(
    storage: Storage, predictor: Predictor, read: Scan, scan: StoredScan, filename: str, user: str
) -> AnalysisOutcome:
    """Score a stored scan and record the analysis (or that no model could score it)."""
    metadata = read.metadata
    try:
        prediction = predictor.predict(read, filename, heatmap=True)
    except NoModelError:
        storage.record_audit(
            user=user,
            action="analysis.no-model",
            target=f"scan:{scan.id}",
            details={"modality": metadata.modality},
        )
        return AnalysisRejected(
            filename, NO_MODEL, _no_model_message(filename, metadata.modality), scan
        )
    heat = prediction.display_heatmap
    if heat is None:
        raise RuntimeError("Predictor.predict(heatmap=True) returned no heatmap")
    heatmap_png = overlay_png(prediction.display, heat)
    # The plain image through the same upscaling as the overlay, so both line up; kept
    # as a blob so a reopened analysis shows exactly what was shown the first time.
    image_png = overlay_png(prediction.display, np.zeros_like(heat), alpha=0.0)
    image_sha256 = hashlib.sha256(image_png).hexdigest()
    storage.blobs.put(image_sha256, image_png)
    trained = prediction.model.trained_at
    trained_at = None if trained is None else f"{trained:%Y-%m-%d %H:%M} UTC"
    analysis = storage.record_analysis(
        NewAnalysis(
            scan_id=scan.id,
            user=user,
            model_name=prediction.model.name,
            model_version=prediction.model.version,
            model_sha256=prediction.model.sha256,
            probability=prediction.probability_malignant,
            threshold=prediction.threshold,
            call=prediction.call,
            heatmap_png=heatmap_png,
            details={
                "filename": filename,
                "sensitivity": prediction.sensitivity,
                "specificity": prediction.specificity,
                "modality": prediction.modality,
                "modality_source": (
                    "from the DICOM header" if metadata.format == "dicom" else "stated at upload"
                ),
                "image_sha256": image_sha256,
                "model_trained_at": trained_at,
                "shown_inverted": prediction.inverted,
                "training_prevalence": prediction.training_prevalence,
                "site_prevalence": prediction.site_prevalence,
                "probability_at_site_prevalence": prediction.probability_at_site_prevalence,
            },
        )
    )
    return AnalysisAccepted(analysis, prediction, image_png, heatmap_png)


def warm_up(predictor: Predictor) -> list[ModelRef]:
    """Start the scan reader's worker and load the champions, ahead of the first upload.

    The reader's worker process is started by its first file, and that start counts
    against the file's ``validate_timeout_s``; a tiny image starts it here instead.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 128, dtype=np.uint8)).save(buffer, format="PNG")
    judge(buffer.getvalue(), "warm-up.png", modality="US")
    return predictor.warm_up()


def _no_model_message(filename: str, modality: str | None) -> str:
    if modality is None:
        return (
            f"{filename}: the kind of scan is unknown, so it was not analysed. "
            "Choose ultrasound or mammography when uploading PNG or JPEG files."
        )
    return (
        f"{filename}: there is no model for {modality} scans yet, so it was stored "
        "but not analysed."
    )


def audit_view(storage: Storage, analysis: StoredAnalysis, *, user: str) -> None:
    """Record that ``user`` opened ``analysis`` (a result card or a history entry)."""
    storage.record_audit(user=user, action="analysis.viewed", target=f"analysis:{analysis.id}")


def audit_report_download(storage: Storage, analysis: StoredAnalysis, *, user: str) -> None:
    """Record that ``user`` downloaded the PDF report of ``analysis``."""
    storage.record_audit(user=user, action="report.downloaded", target=f"analysis:{analysis.id}")
