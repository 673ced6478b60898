"""Filing each upload under its case and exam, and keeping every exam's summary current.

Where an upload goes (`placement`):

- a DICOM file whose header has a PatientID joins that patient's case (one per
  clinician), and the exam of its StudyInstanceUID;
- otherwise (PNG, JPEG, a DICOM without PatientID) the case the clinician names: a new
  one, or one of theirs by its patient key (`bcdiag.storage.worklist.list_cases`);
- an upload without a StudyInstanceUID joins its case's exam of the same modality and
  upload day (UTC), so a named case's four PNG views of one visit make one exam.

There is no default case: a file that names no patient needs the clinician's case name.
Migration 0003 filed the uploads made before cases existed under `UNFILED_CASE`.

Everything here runs inside the caller's transaction, so an upload, an analysis or a
feedback row is never kept without its exam's summary, nor the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bcdiag.errors import BcdiagError
from bcdiag.storage.models import Case, Exam, ExamImage, Upload
from bcdiag.storage.newest import newest_analyses, newest_feedback

UNFILED_CASE = "Uploads without a case"
"""The case migration 0003 filed each user's earlier uploads under."""

_KEY_LENGTH = 255


class CaseNameRequired(BcdiagError):
    """An upload names no patient (no DICOM PatientID) and no case was given for it."""


class PatientIdentity(Protocol):
    """The identifying header fields storage files an upload by.

    `bcdiag.scans.identity.ScanIdentity` is one; storage sits beside the scan reader, not
    above it, so it names only the fields it reads.
    """

    @property
    def patient_id(self) -> str | None: ...
    @property
    def patient_name(self) -> str | None: ...
    @property
    def study_instance_uid(self) -> str | None: ...
    @property
    def series_instance_uid(self) -> str | None: ...
    @property
    def study_date(self) -> date | None: ...
    @property
    def accession_number(self) -> str | None: ...
    @property
    def study_description(self) -> str | None: ...
    @property
    def laterality(self) -> str | None: ...
    @property
    def view(self) -> str | None: ...


@dataclass(frozen=True)
class Placement:
    """The case, exam and image fields of one upload."""

    patient_key: str
    patient_name: str | None
    source: str
    study_instance_uid: str | None
    accession_number: str | None
    study_description: str | None
    study_date: date | None
    modality: str | None
    series_instance_uid: str | None
    laterality: str | None
    view: str | None

    def exam_key(self, uploaded_at: datetime) -> str:
        """The StudyInstanceUID, else the modality and the upload day."""
        if self.study_instance_uid:
            return self.study_instance_uid
        return f"{self.modality or 'unknown'} {uploaded_at:%Y-%m-%d}"


def placement(
    *,
    filename: str,
    metadata: Mapping[str, Any],
    identity: PatientIdentity | None,
    case_name: str | None,
) -> Placement:
    """Where an upload goes: its DICOM patient's case, else the case named ``case_name``.

    Raises:
        CaseNameRequired: no PatientID and ``case_name`` is None or blank.
    """
    name = (case_name or "").strip()[:_KEY_LENGTH]
    if identity is not None and identity.patient_id:
        key, source, patient_name = identity.patient_id, "dicom", identity.patient_name
    elif name:
        key, source, patient_name = name, "named", None
    else:
        raise CaseNameRequired(_case_needed(filename, metadata, identity))
    if identity is None:  # a file without a header, or a caller that read none
        return Placement(
            patient_key=key,
            patient_name=None,
            source=source,
            study_instance_uid=_optional(metadata, "study_instance_uid", 64),
            accession_number=None,
            study_description=None,
            study_date=None,
            modality=_optional(metadata, "modality", 16),
            series_instance_uid=None,
            laterality=_optional(metadata, "laterality", 16),
            view=_optional(metadata, "view", 16),
        )
    return Placement(
        patient_key=key,
        patient_name=patient_name,
        source=source,
        study_instance_uid=identity.study_instance_uid,
        accession_number=identity.accession_number,
        study_description=identity.study_description,
        study_date=identity.study_date,
        modality=_optional(metadata, "modality", 16),
        series_instance_uid=identity.series_instance_uid,
        laterality=identity.laterality,
        view=identity.view,
    )


def _case_needed(
    filename: str, metadata: Mapping[str, Any], identity: PatientIdentity | None
) -> str:
    if metadata.get("format") == "dicom" or identity is not None:
        why = "its DICOM header names no patient (PatientID is empty)"
    else:
        why = f"a {str(metadata.get('format', 'PNG or JPEG')).upper()} file names no patient"
    return (
        f"{filename}: {why}, so it needs a case. "
        "Name a new case for it, or choose one of your existing cases."
    )


def _optional(metadata: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = metadata.get(key)
    return None if value in (None, "") else str(value)[:limit]


def file_upload(session: Session, upload: Upload, where: Placement) -> Exam:
    """File the flushed ``upload`` under its case and exam; refresh that exam's summary.

    A file uploaded again into the same exam keeps one image, at its newest upload. A
    concurrent upload creating the same case or exam first makes the flush fail with
    `IntegrityError`; the caller retries its transaction.
    """
    case = session.scalar(
        select(Case).where(Case.owner == upload.user, Case.patient_key == where.patient_key)
    )
    if case is None:
        case = Case(
            owner=upload.user,
            patient_key=where.patient_key,
            patient_name=where.patient_name,
            source=where.source,
        )
        session.add(case)
        session.flush()
    elif case.patient_name is None and where.patient_name:
        case.patient_name = where.patient_name
    exam = _exam(session, case, upload, where)
    image = session.scalar(
        select(ExamImage).where(ExamImage.exam_id == exam.id, ExamImage.scan_id == upload.scan_id)
    )
    if image is None:
        session.add(
            ExamImage(
                exam_id=exam.id,
                scan_id=upload.scan_id,
                upload_id=upload.id,
                series_instance_uid=where.series_instance_uid,
                laterality=where.laterality,
                view=where.view,
            )
        )
    else:
        image.upload_id = upload.id
    session.flush()
    refresh_exams(session, upload.user, [exam.id], at=upload.created_at)
    return exam


def _exam(session: Session, case: Case, upload: Upload, where: Placement) -> Exam:
    key = where.exam_key(upload.created_at)
    exam = session.scalar(select(Exam).where(Exam.case_id == case.id, Exam.exam_key == key))
    if exam is None:
        exam = Exam(
            case_id=case.id,
            owner=case.owner,
            patient_key=case.patient_key,
            exam_key=key,
            modality=where.modality,
            uploaded_at=upload.created_at,
            last_activity_at=upload.created_at,
            image_count=0,
            state=0,
        )
        session.add(exam)
    # A later image may carry what the first lacked (each DICOM repeats the study's).
    exam.study_instance_uid = exam.study_instance_uid or where.study_instance_uid
    exam.accession_number = exam.accession_number or where.accession_number
    exam.study_description = exam.study_description or where.study_description
    exam.study_date = exam.study_date or where.study_date
    exam.exam_date = exam.study_date or exam.uploaded_at.date()
    session.flush()
    return exam


def refresh_exams_of_scan(session: Session, user: str, scan_id: int, *, at: datetime) -> None:
    """Refresh the summaries of ``user``'s exams that hold ``scan_id``."""
    exam_ids = session.scalars(
        select(ExamImage.exam_id)
        .join(Exam, Exam.id == ExamImage.exam_id)
        .where(ExamImage.scan_id == scan_id, Exam.owner == user)
    ).all()
    refresh_exams(session, user, exam_ids, at=at)


def refresh_exams(session: Session, owner: str, exam_ids: Iterable[int], *, at: datetime) -> None:
    """Recompute image count, state and score of ``owner``'s exams; activity becomes ``at``.

    The exam rows are locked first (PostgreSQL; SQLite writers are serialised anyway), so
    two analyses of one exam's images recorded at once cannot leave a stale summary.
    """
    ids = sorted(set(exam_ids))
    if not ids:
        return
    exams = session.scalars(
        select(Exam).where(Exam.id.in_(ids)).order_by(Exam.id).with_for_update()
    ).all()
    images = session.execute(
        select(ExamImage.exam_id, ExamImage.scan_id).where(ExamImage.exam_id.in_(ids))
    ).all()
    analyses = newest_analyses(session, owner, {scan_id for _, scan_id in images})
    with_outcome = newest_feedback(session, [analysis.id for analysis, _ in analyses.values()])
    states: dict[int, list[int]] = {exam_id: [] for exam_id in ids}
    scores: dict[int, list[float]] = {exam_id: [] for exam_id in ids}
    for exam_id, scan_id in images:
        if scan_id not in analyses:
            states[exam_id].append(0)
            continue
        analysis = analyses[scan_id][0]
        states[exam_id].append(2 if analysis.id in with_outcome else 1)
        scores[exam_id].append(analysis.probability)
    for exam in exams:
        exam.image_count = len(states[exam.id])
        exam.state = min(states[exam.id], default=0)
        exam.score = max(scores[exam.id], default=None)
        exam.last_activity_at = max(exam.last_activity_at, at)
    session.flush()
