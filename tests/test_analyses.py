"""Uploads to stored analyses, history and feedback, on SQLite and PostgreSQL with real MLflow."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from test_inference import breastmnist_png, register

from bcdiag.app.analyses import (
    NO_MODEL,
    AnalysisAccepted,
    AnalysisRejected,
    analyse_stored,
    analyse_upload,
    audit_report_download,
    audit_view,
)
from bcdiag.errors import StorageError
from bcdiag.models.bundle import ModelBundle
from bcdiag.scans import judge
from bcdiag.serving.local import LocalScorer
from bcdiag.serving.results import HEAT_FLOOR, heat_from_png
from bcdiag.storage import Storage
from bcdiag.storage.analysis_store import (
    OUTCOME_LABELS,
    AnalysisNotFound,
    InvalidOutcome,
    NewAnalysis,
    StoredAnalysis,
)
from bcdiag.storage.blobs import FileBlobStore
from bcdiag.storage.models import FEEDBACK_OUTCOMES, Analysis, AuditEvent, Feedback, Scan

Counted = type[Scan] | type[Analysis] | type[Feedback]


def _count(storage: Storage, model: Counted) -> int:
    with storage.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _audit(storage: Storage) -> list[tuple[str, str, str]]:
    with storage.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        return [(e.user, e.action, e.target) for e in events]


def _analysis(storage: Storage, user: str, content: bytes) -> StoredAnalysis:
    """An analysis recorded straight into storage (no model needed)."""
    scan = storage.store_scan(
        content,
        filename="x.png",
        metadata={"format": "png"},
        user=user,
        identity=None,
        case_name="Case A",
    )
    return storage.record_analysis(
        NewAnalysis(
            scan_id=scan.id,
            user=user,
            model_name="bcdiag-us",
            model_version="3",
            model_sha256="c" * 64,
            probability=0.25,
            threshold=0.5,
            call="not suspicious",
            heatmap_png=b"heatmap of " + content,
            details={"filename": "x.png", "sensitivity": 0.8, "specificity": 0.7, "modality": "US"},
        )
    )


@pytest.mark.usefixtures("mlflow_tracking", "audit_trail")
def test_accepted_ultrasound_png_is_stored_scored_and_audited(
    storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    logged = register(small_bundle)
    png = breastmnist_png(data_dir, 0)
    scorer = LocalScorer()
    outcome = analyse_upload(
        storage, scorer, png, "lesion.png", user="alice", modality="US", case_name="Case A"
    )
    assert isinstance(outcome, AnalysisAccepted)
    analysis, prediction = outcome.analysis, outcome.result.finding
    assert (analysis.model_name, analysis.model_version) == ("bcdiag-us", "1")
    assert analysis.model_sha256 == logged.sha256
    assert analysis.scan_sha256 == hashlib.sha256(png).hexdigest()
    assert (analysis.probability, analysis.call) == (
        prediction.probability_malignant,
        prediction.call,
    )
    assert analysis.details["sensitivity"] == prediction.sensitivity
    assert (analysis.filename, analysis.details["modality"]) == ("lesion.png", "US")
    trained = prediction.model.trained_at
    assert trained is not None
    assert analysis.details["model_trained_at"] == f"{trained:%Y-%m-%d %H:%M} UTC"
    assert storage.heatmap_png(analysis) == outcome.result.heatmap_png
    heat = scorer.predictor.predict(
        judge(png, "lesion.png", modality="US").scan, "lesion.png", heatmap=True
    ).display_heatmap
    assert heat is not None
    assert (
        analysis.details["heatmap_blank"]
        == outcome.result.heatmap_blank
        == (heat.max() < HEAT_FLOOR)
    )
    image = storage.blobs.get(analysis.details["image_sha256"])
    assert outcome.result.heatmap_png.startswith(b"\x89PNG") and image == outcome.result.image_png
    stored_heat = heat_from_png(storage.blobs.get(analysis.details["heat_sha256"]))
    assert stored_heat.shape == heat.shape  # the heat itself, for overlays at any zoom
    assert np.abs(stored_heat - heat).max() <= 0.5 / 255 + 1e-6
    assert storage.get_analysis(analysis.id, "alice") == analysis
    assert (_count(storage, Scan), _count(storage, Analysis)) == (1, 1)
    assert _audit(storage) == [
        ("alice", "scan.stored", f"scan:{analysis.scan_id}"),
        ("alice", "analysis.created", f"analysis:{analysis.id}"),
    ]


def test_ct_dicom_is_rejected_with_its_message_and_nothing_is_stored(
    storage: Storage, data_dir: Path
) -> None:
    data = (data_dir / "dicom" / "CT_small.dcm").read_bytes()
    verdict = judge(data, "CT_small.dcm")
    outcome = analyse_upload(
        storage,
        LocalScorer(),
        data,
        "CT_small.dcm",
        user="alice",
        modality=None,
        case_name="Case A",
    )
    assert outcome == AnalysisRejected("CT_small.dcm", str(verdict.code), verdict.message)
    assert "CT_small.dcm" in outcome.message
    assert (_count(storage, Scan), _count(storage, Analysis)) == (0, 0)
    assert _audit(storage) == [("alice", "upload.rejected", "upload")]


@pytest.mark.usefixtures("mlflow_tracking")
def test_mammogram_without_a_champion_is_stored_but_not_analysed(
    storage: Storage, data_dir: Path
) -> None:
    path = next((data_dir / "dicom" / "derived").glob("cbisddsm_*.dcm"))
    outcome = analyse_upload(
        storage,
        LocalScorer(),
        path.read_bytes(),
        path.name,
        user="alice",
        modality=None,
        case_name="Case A",
    )
    assert isinstance(outcome, AnalysisRejected)
    assert outcome.code == NO_MODEL
    assert outcome.message.startswith(f"{path.name}: there is no model for MG scans yet")
    assert outcome.scan is not None and outcome.scan.modality == "MG"
    assert (_count(storage, Scan), _count(storage, Analysis)) == (1, 0)
    assert [action for _, action, _ in _audit(storage)] == ["scan.stored", "analysis.no-model"]


@pytest.mark.usefixtures("mlflow_tracking", "audit_trail")
def test_a_dicom_mammogram_scores_alike_uploaded_and_analysed_again(
    storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    """The upload is scored with the clinician's hint (none: a DICOM names its own
    modality) while it is validated; analysing the stored scan again sends the modality it
    was stored with. Both must be the same MG analysis."""
    register(replace(small_bundle, modality="MG"))  # any real model will do
    path = next((data_dir / "dicom" / "derived").glob("cbisddsm_*.dcm"))
    scorer = LocalScorer()
    uploaded = analyse_upload(
        storage,
        scorer,
        path.read_bytes(),
        path.name,
        user="alice",
        modality=None,
        case_name="Case A",
    )
    assert isinstance(uploaded, AnalysisAccepted)
    scan = storage.get_scan(uploaded.analysis.scan_id)
    assert scan.modality == "MG"
    again = analyse_stored(storage, scorer, scan, path.name, user="alice")
    assert isinstance(again, AnalysisAccepted)
    first, second = uploaded.analysis, again.analysis
    assert (first.model_name, first.details["modality"]) == ("bcdiag-mg", "MG")
    assert (first.probability, first.call, first.model_sha256) == (
        second.probability,
        second.call,
        second.model_sha256,
    )
    assert storage.heatmap_png(first) == storage.heatmap_png(second)


class FailingBlobStore(FileBlobStore):
    """A file store that accepts the scan and fails on every later blob."""

    def _write(self, key: str, data: bytes) -> None:
        if any(self.root.rglob("sha256/*/*")):
            raise StorageError("blob store down (injected)")
        super()._write(key, data)


def test_a_failing_heatmap_blob_leaves_no_analysis_row(storage: Storage, tmp_path: Path) -> None:
    broken = Storage(storage.engine, storage.sessions, FailingBlobStore(tmp_path / "failing"))
    with pytest.raises(StorageError, match="injected"):
        _analysis(broken, "alice", b"scan bytes")
    assert (_count(storage, Scan), _count(storage, Analysis)) == (1, 0)
    assert [action for _, action, _ in _audit(storage)] == ["scan.stored"]


def test_history_is_the_users_own_newest_first(storage: Storage) -> None:
    first = _analysis(storage, "alice", b"one")
    _analysis(storage, "bob", b"two")
    second = _analysis(storage, "alice", b"three")
    assert [a.id for a in storage.list_analyses("alice")] == [second.id, first.id]
    assert [a.id for a in storage.list_analyses("alice", limit=1)] == [second.id]
    assert {a.user for a in storage.list_analyses("bob")} == {"bob"}
    assert storage.list_analyses("carol") == []


def test_another_user_can_neither_read_nor_give_feedback(storage: Storage) -> None:
    analysis = _analysis(storage, "alice", b"one")
    with pytest.raises(AnalysisNotFound) as foreign:
        storage.get_analysis(analysis.id, "bob")
    with pytest.raises(AnalysisNotFound) as missing:
        storage.get_analysis(analysis.id + 100, "bob")
    # Someone else's analysis and a missing one are indistinguishable.
    assert str(foreign.value) == str(missing.value).replace(
        str(analysis.id + 100), str(analysis.id)
    )
    with pytest.raises(AnalysisNotFound):
        storage.record_feedback(analysis.id, "bob", "biopsy-benign")
    with pytest.raises(AnalysisNotFound):
        storage.latest_feedback(analysis.id, "bob")
    assert _count(storage, Feedback) == 0


def test_feedback_is_validated_and_appended(storage: Storage) -> None:
    analysis = _analysis(storage, "alice", b"one")
    assert storage.latest_feedback(analysis.id, "alice") is None
    with pytest.raises(InvalidOutcome, match="'cancer' is not a known outcome; choose one of: "):
        storage.record_feedback(analysis.id, "alice", "cancer")
    first = storage.record_feedback(analysis.id, "alice", "biopsy-benign", "path report 1")
    assert storage.record_feedback(analysis.id, "alice", "biopsy-benign") == first  # no-op
    second = storage.record_feedback(analysis.id, "alice", "biopsy-malignant")
    assert storage.latest_feedback(analysis.id, "alice") == second
    assert (first.outcome, first.note, first.user) == ("biopsy-benign", "path report 1", "alice")
    assert _count(storage, Feedback) == 2
    actions = [action for _, action, _ in _audit(storage)]
    assert actions[-2:] == ["feedback.recorded", "feedback.changed"]
    with storage.sessions() as session:
        change = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert change is not None
    assert change.details == {
        "feedback_id": second.id,
        "outcome": "biopsy-malignant",
        "previous_outcome": "biopsy-benign",
        "previous_feedback_id": first.id,
    }


def test_confirmed_cases_use_the_newest_feedback(storage: Storage) -> None:
    corrected = _analysis(storage, "alice", b"one")
    followed_up = _analysis(storage, "bob", b"two")
    _analysis(storage, "alice", b"no feedback")
    malignant = _analysis(storage, "alice", b"three")
    storage.record_feedback(corrected.id, "alice", "biopsy-malignant")
    storage.record_feedback(corrected.id, "alice", "biopsy-benign")
    storage.record_feedback(followed_up.id, "bob", "normal-follow-up")
    storage.record_feedback(malignant.id, "alice", "biopsy-malignant")
    cases = storage.confirmed_cases()
    assert [(c.analysis_id, c.scan_sha256, c.outcome, c.malignant) for c in cases] == [
        (corrected.id, corrected.scan_sha256, "biopsy-benign", 0),
        (followed_up.id, followed_up.scan_sha256, "normal-follow-up", 0),
        (malignant.id, malignant.scan_sha256, "biopsy-malignant", 1),
    ]


def test_every_outcome_has_a_training_label() -> None:
    assert set(OUTCOME_LABELS) == set(FEEDBACK_OUTCOMES)


def test_views_and_report_downloads_are_audited(storage: Storage) -> None:
    analysis = _analysis(storage, "alice", b"one")
    audit_view(storage, analysis, user="alice")
    audit_report_download(storage, analysis, user="alice")
    assert _audit(storage)[-2:] == [
        ("alice", "analysis.viewed", f"analysis:{analysis.id}"),
        ("alice", "report.downloaded", f"analysis:{analysis.id}"),
    ]
