"""The clinician's worklist of exams, one exam in full, and their cases.

Every query is limited to the clinician's own cases: another clinician's exam is
answered exactly as a missing one. The worklist reads the summary columns that
`bcdiag.storage.exam_store` keeps current, through indexes that start with the owner,
so a page costs the same with ten exams or ten thousand.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from bcdiag.errors import BcdiagError
from bcdiag.storage.analysis_store import StoredAnalysis, StoredFeedback
from bcdiag.storage.database import database_errors, session_engine
from bcdiag.storage.models import EXAM_STATES, Case, Exam, ExamImage, Scan, Upload
from bcdiag.storage.newest import newest_analyses, newest_feedback
from bcdiag.storage.scan_store import StoredScan

WorklistSort = Literal["date", "patient", "state", "score", "activity"]
"""Worklist orders: exam date, patient key, state (workflow order), score, last activity."""

PAGE_LIMIT = 500
"""The most rows one page may ask for."""

VIEW_ORDER = ("CC", "MLO")
"""Views shown first, in this order (then any other view, then none); right before left."""


class ExamNotFound(BcdiagError):
    """No exam with this id belongs to this user (it may be someone else's)."""


class InvalidWorklistQuery(BcdiagError):
    """A worklist sort, state or page bound is not one of those accepted."""


@dataclass(frozen=True)
class CaseSummary:
    """One of a clinician's cases, for choosing the case an upload joins."""

    id: int
    patient_key: str
    patient_name: str | None
    source: str
    created_at: datetime
    exam_count: int


@dataclass(frozen=True)
class ExamSummary:
    """One exam as the worklist lists it: its case's identifiers and its summary."""

    id: int
    case_id: int
    patient_key: str
    patient_name: str | None
    case_source: str
    exam_key: str
    study_instance_uid: str | None
    accession_number: str | None
    study_description: str | None
    study_date: date | None
    exam_date: date
    modality: str | None
    uploaded_at: datetime
    last_activity_at: datetime
    image_count: int
    state: str
    score: float | None

    @classmethod
    def from_row(cls, exam: Exam, case: Case) -> ExamSummary:
        """Copy ORM rows into plain data."""
        return cls(
            id=exam.id,
            case_id=case.id,
            patient_key=case.patient_key,
            patient_name=case.patient_name,
            case_source=case.source,
            exam_key=exam.exam_key,
            study_instance_uid=exam.study_instance_uid,
            accession_number=exam.accession_number,
            study_description=exam.study_description,
            study_date=exam.study_date,
            exam_date=exam.exam_date,
            modality=exam.modality,
            uploaded_at=exam.uploaded_at,
            last_activity_at=exam.last_activity_at,
            image_count=exam.image_count,
            state=EXAM_STATES[exam.state],
            score=exam.score,
        )


@dataclass(frozen=True)
class WorklistPage:
    """One page of exams and how many match the filters in all."""

    rows: list[ExamSummary]
    total: int


@dataclass(frozen=True)
class ExamImageEntry:
    """One image of an exam: the scan, its view, its newest analysis and that one's
    newest feedback."""

    scan: StoredScan
    filename: str
    uploaded_at: datetime
    series_instance_uid: str | None
    laterality: str | None
    view: str | None
    analysis: StoredAnalysis | None
    feedback: StoredFeedback | None


@dataclass(frozen=True)
class ExamDetail:
    """An exam with its images, CC before MLO, right before left."""

    exam: ExamSummary
    images: list[ExamImageEntry]


def worklist(
    sessions: sessionmaker[Session],
    user: str,
    *,
    sort: WorklistSort = "date",
    descending: bool = True,
    patient: str | None = None,
    state: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    min_score: float | None = None,
    offset: int = 0,
    limit: int = 50,
) -> WorklistPage:
    """A page of ``user``'s exams, sorted and filtered, with the number that match.

    Args:
        sessions: session factory of a migrated database.
        user: whose exams.
        sort: the order (`WorklistSort`); ties go by exam id in the same direction.
            Exams without a score come last in either direction of ``"score"``.
        descending: newest, highest, latest in workflow, or Z first.
        patient: only exams whose patient key or name contains this (any case).
        state: only exams in this state (one of `EXAM_STATES`).
        date_from: only exams dated (study date, else upload day) on or after this.
        date_to: only exams dated on or before this.
        min_score: only exams scored at least this.
        offset: rows to skip.
        limit: rows to return, 1 to `PAGE_LIMIT`.

    Raises:
        InvalidWorklistQuery: an unknown sort or state, or a page out of bounds.
    """
    conditions = _conditions(user, patient, state, date_from, date_to, min_score)
    if not 1 <= limit <= PAGE_LIMIT or offset < 0:
        raise InvalidWorklistQuery(
            f"a worklist page has 1 to {PAGE_LIMIT} rows from offset 0 or more; "
            f"got limit {limit}, offset {offset}"
        )
    page = (
        select(Exam, Case)
        .join(Case, Case.id == Exam.case_id)
        .where(*conditions)
        .order_by(*_order(sort, descending))
        .offset(offset)
        .limit(limit)
    )
    count = select(func.count()).select_from(Exam).where(*conditions)
    if patient:  # only the patient filter reads the cases' names
        count = count.join(Case, Case.id == Exam.case_id)
    with sessions() as session, database_errors(session_engine(session), "reading the worklist"):
        rows = [ExamSummary.from_row(exam, case) for exam, case in session.execute(page)]
        return WorklistPage(rows=rows, total=int(session.scalar(count) or 0))


def _conditions(
    user: str,
    patient: str | None,
    state: str | None,
    date_from: date | None,
    date_to: date | None,
    min_score: float | None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Exam.owner == user]
    if patient:
        conditions.append(
            or_(
                Exam.patient_key.icontains(patient, autoescape=True),
                Case.patient_name.icontains(patient, autoescape=True),
            )
        )
    if state is not None:
        if state not in EXAM_STATES:
            raise InvalidWorklistQuery(
                f"{state!r} is not an exam state; choose one of: {', '.join(EXAM_STATES)}"
            )
        conditions.append(Exam.state == EXAM_STATES.index(state))
    if date_from is not None:
        conditions.append(Exam.exam_date >= date_from)
    if date_to is not None:
        conditions.append(Exam.exam_date <= date_to)
    if min_score is not None:
        conditions.append(Exam.score >= min_score)
    return conditions


def _order(sort: str, descending: bool) -> list[ColumnElement[Any]]:
    columns = {
        "date": Exam.exam_date,
        "patient": Exam.patient_key,
        "state": Exam.state,
        "score": Exam.score,
        "activity": Exam.last_activity_at,
    }
    if sort not in columns:
        raise InvalidWorklistQuery(
            f"{sort!r} is not a worklist order; choose one of: {', '.join(get_args(WorklistSort))}"
        )
    column, tie = columns[sort], Exam.id
    ordered: list[ColumnElement[Any]] = (
        [column.desc(), tie.desc()] if descending else [column.asc(), tie.asc()]
    )
    if sort == "score":
        ordered.insert(0, Exam.score.is_(None))  # false (scored) sorts before true
    return ordered


def exam(sessions: sessionmaker[Session], user: str, exam_id: int) -> ExamDetail:
    """``user``'s exam ``exam_id`` with every image; `ExamNotFound` if it is not theirs."""
    with sessions() as session, database_errors(session_engine(session), "reading the exam"):
        found = session.execute(
            select(Exam, Case)
            .join(Case, Case.id == Exam.case_id)
            .where(Exam.id == exam_id, Exam.owner == user)
        ).first()
        if found is None:
            # The same answer for "someone else's" and "missing": nothing leaks.
            raise ExamNotFound(f"exam {exam_id} is not among {user}'s exams")
        images = session.execute(
            select(ExamImage, Scan, Upload)
            .join(Scan, Scan.id == ExamImage.scan_id)
            .join(Upload, Upload.id == ExamImage.upload_id)
            .where(ExamImage.exam_id == exam_id)
        ).all()
        found_readings = _readings(session, user, [scan.id for _, scan, _ in images])
    entries = [
        ExamImageEntry(
            scan=StoredScan.from_row(scan),
            filename=upload.filename,
            uploaded_at=upload.created_at,
            series_instance_uid=image.series_instance_uid,
            laterality=image.laterality,
            view=image.view,
            analysis=found_readings[scan.id][0] if scan.id in found_readings else None,
            feedback=found_readings[scan.id][1] if scan.id in found_readings else None,
        )
        for image, scan, upload in images
    ]
    return ExamDetail(exam=ExamSummary.from_row(*found), images=sorted(entries, key=_view_order))


def _readings(
    session: Session, user: str, scan_ids: Collection[int]
) -> dict[int, tuple[StoredAnalysis, StoredFeedback | None]]:
    """scan id -> ``user``'s newest analysis of it and that analysis' newest feedback."""
    analyses = newest_analyses(session, user, scan_ids)
    feedback = newest_feedback(session, [analysis.id for analysis, _ in analyses.values()])
    found = {}
    for scan_id, (analysis, sha256) in analyses.items():
        outcome = feedback.get(analysis.id)
        found[scan_id] = (
            StoredAnalysis.from_row(analysis, sha256),
            None if outcome is None else StoredFeedback.from_row(outcome),
        )
    return found


def _view_order(image: ExamImageEntry) -> tuple[int, int, int]:
    if image.view in VIEW_ORDER:
        view = VIEW_ORDER.index(image.view)
    else:
        view = len(VIEW_ORDER) + (image.view is None)  # other views, then none
    side = {"R": 0, "L": 1}.get(image.laterality or "", 2)
    return (view, side, image.scan.id)


def list_cases(sessions: sessionmaker[Session], user: str) -> list[CaseSummary]:
    """``user``'s cases by patient key, each with its number of exams."""
    query = (
        select(Case, func.count(Exam.id))
        .outerjoin(Exam, Exam.case_id == Case.id)
        .where(Case.owner == user)
        .group_by(Case.id)
        .order_by(Case.patient_key)
    )
    with sessions() as session, database_errors(session_engine(session), "listing cases"):
        return [
            CaseSummary(
                id=case.id,
                patient_key=case.patient_key,
                patient_name=case.patient_name,
                source=case.source,
                created_at=case.created_at,
                exam_count=exam_count,
            )
            for case, exam_count in session.execute(query)
        ]
