"""One upload from file to stored analysis, with the audit trail the clinician app needs.

`analyse_upload` never raises for a bad file or a modality without a model: it
returns an `AnalysisRejected` with a plain sentence. The order of work keeps the
stores consistent: a rejected file stores nothing; an accepted one is stored
before its score is recorded (so a scan without a model, or one the service could not
score, is kept, listed in its uploader's history, and analysed later with
`analyse_stored`); the heatmap blob is written before the analysis row that names it.

The inference service reads and scores an upload while the app validates and stores it:
both read the same bytes with the same rules, so the wait is the longer of the two rather
than their sum (a 13.8 MB DICOM mammogram: about 0.5 s less). A rejected file's score is
never read, and its request does not outlive the call: it is cancelled if it has not
started, else awaited (the service judges by the same rules, so it ends quickly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from bcdiag.errors import ScanRejected
from bcdiag.scans import judge, start_reader
from bcdiag.scans.identity import read_identity
from bcdiag.serving.results import (
    NO_MODEL,
    ModelRef,
    NoModelError,
    ScanResult,
    Scorer,
    ServiceUnavailable,
    Upload,
)
from bcdiag.storage import Storage, StoredScan
from bcdiag.storage.analysis_store import NewAnalysis, StoredAnalysis
from bcdiag.storage.exam_store import CaseNameRequired

SERVICE_UNAVAILABLE = "service-unavailable"
"""`AnalysisRejected.code` of a valid scan the inference service did not score in time."""

CASE_NAME_REQUIRED = "case-name-required"
"""`AnalysisRejected.code` of a file that names no patient, uploaded without a case name."""


@dataclass(frozen=True)
class AnalysisAccepted:
    """A scored upload: the stored analysis and the result it records (with the images
    to show)."""

    analysis: StoredAnalysis
    result: ScanResult
    ok: Literal[True] = True


@dataclass(frozen=True)
class AnalysisRejected:
    """An upload that was not analysed: a stable ``code`` and a sentence for people.

    ``scan`` is the stored scan when the file was valid but could not be scored yet
    (``no-model``, ``service-unavailable``): it is listed in the history, to analyse later.
    """

    file: str
    code: str
    message: str
    scan: StoredScan | None = None
    ok: Literal[False] = False


AnalysisOutcome = AnalysisAccepted | AnalysisRejected

_scoring = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scoring")
"""Requests to the inference service made while the upload is validated and stored."""


def analyse_upload(
    storage: Storage,
    scorer: Scorer,
    data: bytes,
    filename: str,
    *,
    user: str,
    modality: str | None,
    case_name: str | None,
) -> AnalysisOutcome:
    """Validate, store (filed under its case and exam), score and record one uploaded file.

    Args:
        storage: where the scan, heatmap, analysis and audit events go.
        scorer: scores with the champion of the scan's modality (the inference service).
        data: the uploaded file, unchanged.
        filename: the name the user gave it (shown back, never interpreted).
        user: the clinician uploading.
        modality: ``"US"`` or ``"MG"`` for PNG and JPEG files; DICOM names its own.
        case_name: the case a PNG or JPEG file (or a DICOM without PatientID) joins: a new
            name, or the patient key of one of the user's cases (`Storage.list_cases`).
            None or blank rejects such a file with ``case-name-required`` (there is no
            default case). A DICOM with a PatientID joins that patient's case whatever
            this says.

    Raises:
        StorageError: the database or blob store failed.
        RegistryUnavailable: the model registry failed or did not answer in time.
    """
    pending = _scoring.submit(scorer.score, Upload(data, filename, modality))
    verdict = judge(data, filename, modality=modality)
    if verdict.scan is None:
        return _rejected(
            storage, pending, user, filename, verdict.code or "rejected", verdict.message
        )
    try:
        scan = storage.store_scan(
            data,
            filename=filename,
            metadata=verdict.scan.metadata.as_dict(),
            user=user,
            identity=read_identity(data, filename),
            case_name=case_name,
        )
    except ScanRejected as error:  # a header the reader accepted but identity cannot parse
        return _rejected(storage, pending, user, filename, error.code, error.message)
    except CaseNameRequired as error:
        return _rejected(storage, pending, user, filename, CASE_NAME_REQUIRED, str(error))
    return _score(storage, pending.result, scan, filename, user)


def _rejected(
    storage: Storage,
    pending: Future[ScanResult],
    user: str,
    filename: str,
    code: str,
    message: str,
) -> AnalysisRejected:
    """An upload that stored nothing, with its ``upload.rejected`` event; its scoring
    request ``pending`` is cancelled or, if already running, awaited and ignored."""
    if not pending.cancel():
        pending.exception()  # waits; whatever it raised or returned is not this file's answer
    storage.record_audit(
        user=user,
        action="upload.rejected",
        target="upload",
        details={"filename": filename, "code": code},
    )
    return AnalysisRejected(filename, code, message)


def analyse_stored(
    storage: Storage, scorer: Scorer, scan: StoredScan, filename: str, *, user: str
) -> AnalysisOutcome:
    """Analyse a scan stored earlier without an analysis (e.g. before its model existed).

    The stored file is read again as it was at upload, with the modality it was
    accepted as; nothing new is stored but the analysis.
    """
    data = storage.scan_bytes(scan)
    verdict = judge(data, filename, modality=scan.modality)
    if verdict.scan is None:  # accepted once; rules may have changed since
        return AnalysisRejected(filename, verdict.code or "rejected", verdict.message, scan)
    return _score(
        storage, lambda: scorer.score(Upload(data, filename, scan.modality)), scan, filename, user
    )


def _score(
    storage: Storage,
    scored: Callable[[], ScanResult],
    scan: StoredScan,
    filename: str,
    user: str,
) -> AnalysisOutcome:
    """Record a stored scan's analysis from `scored` (the service's answer), or why none
    could be made."""
    modality = scan.modality
    try:
        result = scored()
    except NoModelError:
        storage.record_audit(
            user=user,
            action="analysis.no-model",
            target=f"scan:{scan.id}",
            details={"modality": modality},
        )
        return AnalysisRejected(filename, NO_MODEL, _no_model_message(filename, modality), scan)
    except ServiceUnavailable as error:
        storage.record_audit(
            user=user,
            action="analysis.service-unavailable",
            target=f"scan:{scan.id}",
            details={"reason": str(error)},
        )
        return AnalysisRejected(
            filename, SERVICE_UNAVAILABLE, _unavailable_message(filename, error), scan
        )
    finding = result.finding
    # kept as blobs so a reopened analysis shows exactly what was shown the first time
    image_sha256 = hashlib.sha256(result.image_png).hexdigest()
    storage.blobs.put(image_sha256, result.image_png)
    heat_sha256 = hashlib.sha256(result.heat_png).hexdigest()
    storage.blobs.put(heat_sha256, result.heat_png)
    trained = finding.model.trained_at
    trained_at = None if trained is None else f"{trained:%Y-%m-%d %H:%M} UTC"
    analysis = storage.record_analysis(
        NewAnalysis(
            scan_id=scan.id,
            user=user,
            model_name=finding.model.name,
            model_version=finding.model.version,
            model_sha256=finding.model.sha256,
            probability=finding.probability_malignant,
            threshold=finding.threshold,
            call=finding.call,
            heatmap_png=result.heatmap_png,
            details={
                "filename": filename,
                "sensitivity": finding.sensitivity,
                "specificity": finding.specificity,
                "modality": finding.modality,
                "modality_source": (
                    "from the DICOM header" if scan.format == "dicom" else "stated at upload"
                ),
                "image_sha256": image_sha256,
                "heat_sha256": heat_sha256,
                "model_trained_at": trained_at,
                "shown_inverted": finding.inverted,
                "heatmap_blank": result.heatmap_blank,
                "training_prevalence": finding.training_prevalence,
                "site_prevalence": finding.site_prevalence,
                "probability_at_site_prevalence": finding.probability_at_site_prevalence,
            },
        )
    )
    return AnalysisAccepted(analysis, result)


def warm_up(scorer: Scorer) -> list[ModelRef]:
    """Start the scan reader's worker (`start_reader`) and ask for the champions, ahead
    of the first upload."""
    start_reader()
    return scorer.ready()


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


def _unavailable_message(filename: str, error: ServiceUnavailable) -> str:
    return (
        f"{filename}: {error}. The scan is stored: in a minute, analyse it "
        "from “My analyses” or upload it again."
    )


def audit_view(storage: Storage, analysis: StoredAnalysis, *, user: str) -> None:
    """Record that ``user`` opened ``analysis`` (a result card or a history entry)."""
    storage.record_audit(user=user, action="analysis.viewed", target=f"analysis:{analysis.id}")


def audit_report_download(storage: Storage, analysis: StoredAnalysis, *, user: str) -> None:
    """Record that ``user`` downloaded the PDF report of ``analysis``."""
    storage.record_audit(user=user, action="report.downloaded", target=f"analysis:{analysis.id}")
