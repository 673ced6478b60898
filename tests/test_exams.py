"""Uploads filed as patient -> exam -> images, and each exam's summary kept current,
on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from exam_files import MG, analyse, four_views, store_dicom
from scan_corpus import png_bytes
from sqlalchemy import func, select

from bcdiag.app.analyses import CASE_NAME_REQUIRED, AnalysisRejected, analyse_upload
from bcdiag.scans.identity import read_identity
from bcdiag.serving.local import LocalScorer
from bcdiag.serving.results import NO_MODEL
from bcdiag.storage import Storage, StoredScan
from bcdiag.storage.blobs import FileBlobStore
from bcdiag.storage.exam_store import CaseNameRequired
from bcdiag.storage.models import AuditEvent, Case, Exam, ExamImage, Scan, Upload
from bcdiag.storage.worklist import ExamNotFound, ExamSummary


def store_png(
    storage: Storage, seed: int, case_name: str | None, modality: str = "US"
) -> StoredScan:
    """A distinct small PNG stored into the case ``case_name``."""
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)
    return storage.store_scan(
        png_bytes(pixels),
        filename=f"{seed}.png",
        metadata={"format": "png", "modality": modality},
        user="alice",
        case_name=case_name,
    )


def only_exam(storage: Storage, user: str = "alice") -> ExamSummary:
    page = storage.worklist(user)
    assert page.total == len(page.rows) == 1
    return page.rows[0]


def upload_day(storage: Storage) -> date:
    """The one UTC day all uploads so far were made on."""
    with storage.sessions() as session:
        [day] = {upload.created_at.date() for upload in session.scalars(select(Upload))}
    return day


def test_four_views_of_one_study_make_one_exam_with_its_header_identifiers(
    storage: Storage, data_dir: Path
) -> None:
    files = four_views(data_dir, patient_id="P-1", study_uid="1.2.3.4", accession="A7")
    for key in ("LMLO", "RCC", "RMLO", "LCC"):
        store_dicom(storage, files[key], f"{key}.dcm")
    exam = only_exam(storage)
    assert (exam.patient_key, exam.patient_name, exam.case_source) == ("P-1", "DOE^JANE", "dicom")
    assert (exam.exam_key, exam.study_instance_uid, exam.accession_number) == (
        "1.2.3.4",
        "1.2.3.4",
        "A7",
    )
    assert (exam.study_date, exam.exam_date, exam.study_description, exam.modality) == (
        date(2026, 3, 2),
        date(2026, 3, 2),
        "Screening mammography",
        "MG",
    )
    assert (exam.image_count, exam.state, exam.score) == (4, "not analysed", None)
    detail = storage.exam("alice", exam.id)
    assert detail.exam == exam
    assert [(i.laterality, i.view, i.filename) for i in detail.images] == [
        ("R", "CC", "RCC.dcm"),
        ("L", "CC", "LCC.dcm"),
        ("R", "MLO", "RMLO.dcm"),
        ("L", "MLO", "LMLO.dcm"),
    ]
    assert len({i.series_instance_uid for i in detail.images}) == 4
    assert all(i.analysis is None and i.feedback is None for i in detail.images)
    with storage.sessions() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "scan.stored"))
        assert {e.details["exam_id"] for e in events} == {exam.id}


def test_two_studies_of_one_patient_are_two_exams_of_one_case(
    storage: Storage, data_dir: Path
) -> None:
    first = four_views(data_dir, patient_id="P-1", study_date=date(2025, 3, 1))
    second = four_views(data_dir, patient_id="P-1", study_date=date(2026, 3, 2))
    store_dicom(storage, first["RCC"], "2025.dcm")
    store_dicom(storage, second["RCC"], "2026.dcm")
    store_dicom(storage, second["RCC"], "2026 again.dcm")  # the same file again: one image
    page = storage.worklist("alice")
    assert [(r.exam_date, r.image_count) for r in page.rows] == [
        (date(2026, 3, 2), 1),
        (date(2025, 3, 1), 1),
    ]
    assert storage.exam("alice", page.rows[0].id).images[0].filename == "2026 again.dcm"
    [case] = storage.list_cases("alice")
    assert (case.patient_key, case.patient_name, case.source, case.exam_count) == (
        "P-1",
        "DOE^JANE",
        "dicom",
        2,
    )


def test_pngs_join_the_case_the_clinician_names(storage: Storage, data_dir: Path) -> None:
    store_png(storage, 1, "Breast clinic 7")
    store_png(storage, 2, "  Breast clinic 7 ")  # the same case, blanks aside
    store_png(storage, 3, "Breast clinic 7", modality="MG")  # another exam: other modality
    lcc = four_views(data_dir, patient_id="P-1", study_uid="1.2.3.4")["LCC"]
    store_dicom(storage, lcc, "lcc.dcm")
    store_png(storage, 4, "P-1")  # joins the DICOM patient's case, as an exam of its own
    day = upload_day(storage)
    rows = storage.worklist("alice", sort="patient", descending=False).rows
    assert [(r.patient_key, r.exam_key, r.exam_date, r.image_count) for r in rows] == [
        ("Breast clinic 7", f"US {day:%Y-%m-%d}", day, 2),
        ("Breast clinic 7", f"MG {day:%Y-%m-%d}", day, 1),
        ("P-1", "1.2.3.4", date(2026, 3, 2), 1),
        ("P-1", f"US {day:%Y-%m-%d}", day, 1),
    ]
    cases = {c.patient_key: (c.source, c.exam_count) for c in storage.list_cases("alice")}
    assert cases == {"Breast clinic 7": ("named", 2), "P-1": ("dicom", 2)}


def _counts(storage: Storage) -> tuple[int, ...]:
    with storage.sessions() as session:
        return tuple(
            int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (Scan, Upload, Case, Exam, ExamImage, AuditEvent)
        )


def test_a_file_that_names_no_patient_needs_a_case_name(storage: Storage, data_dir: Path) -> None:
    with pytest.raises(CaseNameRequired) as png:
        store_png(storage, 1, None)
    assert str(png.value) == (
        "1.png: a PNG file names no patient, so it needs a case. "
        "Name a new case for it, or choose one of your existing cases."
    )
    with pytest.raises(CaseNameRequired, match=r"^2\.png: a PNG file names no patient"):
        store_png(storage, 2, "   ")
    anonymous = four_views(data_dir, patient_id=None)["RCC"]
    identity = read_identity(anonymous, "rcc.dcm")
    with pytest.raises(CaseNameRequired, match=r"^rcc\.dcm: its DICOM header names no patient"):
        storage.store_scan(
            anonymous, filename="rcc.dcm", metadata=MG, user="alice", identity=identity,
            case_name=None,
        )  # fmt: skip
    assert _counts(storage) == (0, 0, 0, 0, 0, 0)
    assert isinstance(storage.blobs, FileBlobStore)
    assert not any(path.is_file() for path in storage.blobs.root.rglob("*"))
    storage.store_scan(
        anonymous, filename="rcc.dcm", metadata=MG, user="alice", identity=identity,
        case_name="Referral 12",
    )  # fmt: skip
    assert only_exam(storage).patient_key == "Referral 12"


def test_the_exam_score_is_the_highest_of_its_views_newest_analyses(
    storage: Storage, data_dir: Path
) -> None:
    files = four_views(data_dir, patient_id="P-1")
    scans = {key: store_dicom(storage, data, f"{key}.dcm") for key, data in files.items()}
    analyse(storage, scans["RCC"].id, 0.2)
    lcc = analyse(storage, scans["LCC"].id, 0.7)
    exam = only_exam(storage)
    assert (exam.state, exam.score) == ("not analysed", 0.7)  # two views still wait
    assert exam.last_activity_at == lcc.created_at
    analyse(storage, scans["RMLO"].id, 0.1)
    analyse(storage, scans["LMLO"].id, 0.4)
    assert (only_exam(storage).state, only_exam(storage).score) == ("analysed", 0.7)
    newer = analyse(storage, scans["LCC"].id, 0.3)  # analysed again: the newest counts
    assert only_exam(storage).score == 0.4
    analyse(storage, scans["RCC"].id, 0.9, user="bob")  # bob's analysis is not alice's
    assert only_exam(storage).score == 0.4
    detail = storage.exam("alice", exam.id)
    assert [i.analysis.probability if i.analysis else None for i in detail.images] == [
        0.2,
        0.3,
        0.1,
        0.4,
    ]
    assert detail.images[1].analysis == newer


def test_the_exam_state_follows_its_least_advanced_view(storage: Storage, data_dir: Path) -> None:
    files = four_views(data_dir, patient_id="P-1")
    scans = [store_dicom(storage, data, f"{key}.dcm") for key, data in files.items()]
    assert only_exam(storage).state == "not analysed"
    analyses = [analyse(storage, scan.id, 0.25) for scan in scans]
    assert only_exam(storage).state == "analysed"
    for analysis in analyses[:3]:
        storage.record_feedback(analysis.id, "alice", "normal-follow-up")
    assert only_exam(storage).state == "analysed"
    last = storage.record_feedback(analyses[3].id, "alice", "biopsy-benign")
    exam = only_exam(storage)
    assert exam.state == "outcome recorded" and exam.last_activity_at == last.created_at
    assert storage.exam("alice", exam.id).images[-1].feedback == last
    analyse(storage, scans[0].id, 0.5)  # a new analysis has no outcome yet
    assert only_exam(storage).state == "analysed"
    store_dicom(storage, four_views(data_dir, patient_id="P-1")["RCC"], "extra.dcm")
    assert storage.exam("alice", exam.id).exam.state == "analysed"  # another study, exam
    assert storage.worklist("alice").total == 2


def test_clinicians_see_only_their_own_cases_and_exams(storage: Storage, data_dir: Path) -> None:
    rcc = four_views(data_dir, patient_id="P-1")["RCC"]
    alice_scan = store_dicom(storage, rcc, "rcc.dcm")
    bob_scan = store_dicom(storage, rcc, "same file.dcm", user="bob")
    assert alice_scan.id == bob_scan.id  # one stored file, two uploads
    analyse(storage, alice_scan.id, 0.8)
    alice, bob = only_exam(storage, "alice"), only_exam(storage, "bob")
    assert alice.id != bob.id and alice.case_id != bob.case_id
    assert (alice.score, bob.score) == (0.8, None)
    assert storage.worklist("carol").total == 0 and storage.list_cases("carol") == []
    with pytest.raises(ExamNotFound) as foreign:
        storage.exam("bob", alice.id)
    with pytest.raises(ExamNotFound) as missing:
        storage.exam("bob", alice.id + 100)
    assert str(foreign.value) == str(missing.value).replace(str(alice.id + 100), str(alice.id))


@pytest.mark.usefixtures("mlflow_tracking")
def test_uploads_through_the_app_path_are_filed_by_header_or_case_name(
    storage: Storage, data_dir: Path
) -> None:
    scorer = LocalScorer()  # no champion is registered: files are stored, not analysed
    files = four_views(data_dir, patient_id="P-1", study_uid="1.2.3.4")
    for key, data in files.items():
        outcome = analyse_upload(
            storage, scorer, data, f"{key}.dcm", user="alice", modality=None, case_name=None
        )
        assert isinstance(outcome, AnalysisRejected) and outcome.code == NO_MODEL
    png = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    named = analyse_upload(
        storage, scorer, png, "us.png", user="alice", modality="US", case_name="Clinic 7"
    )
    assert isinstance(named, AnalysisRejected) and named.code == NO_MODEL
    rows = storage.worklist("alice", sort="patient", descending=False).rows
    assert [(r.patient_key, r.exam_key, r.image_count) for r in rows] == [
        ("Clinic 7", f"US {upload_day(storage):%Y-%m-%d}", 1),
        ("P-1", "1.2.3.4", 4),
    ]


@pytest.mark.usefixtures("mlflow_tracking")  # the scorer it starts asks this registry
def test_an_upload_without_a_case_name_is_rejected_with_its_reason(
    storage: Storage, data_dir: Path
) -> None:
    png = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    outcome = analyse_upload(
        storage, LocalScorer(), png, "us.png", user="alice", modality="US", case_name=" "
    )
    assert outcome == AnalysisRejected(
        "us.png",
        CASE_NAME_REQUIRED,
        "us.png: a PNG file names no patient, so it needs a case. "
        "Name a new case for it, or choose one of your existing cases.",
    )
    assert _counts(storage) == (0, 0, 0, 0, 0, 1)
    with storage.sessions() as session:
        event = session.scalars(select(AuditEvent)).one()
    assert (event.action, event.details) == (
        "upload.rejected",
        {"filename": "us.png", "code": CASE_NAME_REQUIRED},
    )
