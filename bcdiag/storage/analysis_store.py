"""Analyses of stored scans and the outcomes clinicians report back about them.

Each clinician sees only their own analyses: a lookup of another clinician's
analysis fails exactly as one of an analysis that does not exist. Analyses and
feedback are append-only; a later feedback row supersedes an earlier one.

An analysis row is written only after its heatmap blob is durable, in one
transaction with its ``analysis.created`` audit event, so no row ever points at
a missing heatmap. Recording an analysis or feedback refreshes, in the same
transaction, the summary of each of the clinician's exams that holds the scan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bcdiag.errors import BcdiagError
from bcdiag.storage.blobs import BlobStore
from bcdiag.storage.database import database_errors, session_engine
from bcdiag.storage.exam_store import refresh_exams_of_scan
from bcdiag.storage.models import FEEDBACK_OUTCOMES, Analysis, Feedback, Scan
from bcdiag.storage.scan_store import record_audit

OUTCOME_LABELS = {"biopsy-malignant": 1, "biopsy-benign": 0, "normal-follow-up": 0}
"""Feedback outcome -> training label (1 = malignant); covers `FEEDBACK_OUTCOMES`."""


class AnalysisNotFound(BcdiagError):
    """No analysis with this id belongs to this user (it may be someone else's)."""


class InvalidOutcome(BcdiagError):
    """Feedback named an outcome that is not one of `FEEDBACK_OUTCOMES`."""


@dataclass(frozen=True, kw_only=True)
class ModelResult:
    """What a model said about one scan, and which model (name, version, artifact hash)."""

    model_name: str
    model_version: str
    model_sha256: str
    probability: float
    threshold: float
    call: str


@dataclass(frozen=True, kw_only=True)
class NewAnalysis(ModelResult):
    """One model result on one stored scan, as the caller hands it to `record_analysis`.

    ``details`` holds what `StoredAnalysis.details` lists, except ``heatmap_sha256``,
    which storing the heatmap adds.
    """

    scan_id: int
    user: str
    heatmap_png: bytes | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StoredAnalysis(ModelResult):
    """An analysis row as plain data, with its scan's hash.

    ``details`` holds ``filename`` (as this user named the file), ``sensitivity``,
    ``specificity`` and ``modality`` (the operating point's, on validation data),
    ``heatmap_sha256``, and whatever else the caller recorded.
    """

    id: int
    scan_id: int
    scan_sha256: str
    user: str
    created_at: datetime
    heatmap_blob_key: str | None
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: Analysis, scan_sha256: str) -> StoredAnalysis:
        """Copy an ORM row into plain data."""
        return cls(
            id=row.id,
            scan_id=row.scan_id,
            scan_sha256=scan_sha256,
            user=row.user,
            created_at=row.created_at,
            model_name=row.model_name,
            model_version=row.model_version,
            model_sha256=row.model_sha256,
            probability=row.probability,
            threshold=row.threshold,
            call=row.call,
            heatmap_blob_key=row.heatmap_blob_key,
            details=dict(row.details),
        )

    @property
    def filename(self) -> str:
        """The file name the user gave, or "" if none was recorded."""
        return str(self.details.get("filename", ""))

    @property
    def heatmap_sha256(self) -> str | None:
        """Hash of the heatmap PNG in the blob store, if one was stored."""
        value = self.details.get("heatmap_sha256")
        return None if value is None else str(value)


@dataclass(frozen=True)
class StoredFeedback:
    """A feedback row as plain data."""

    id: int
    analysis_id: int
    user: str
    outcome: str
    note: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Feedback) -> StoredFeedback:
        """Copy an ORM row into plain data."""
        return cls(row.id, row.analysis_id, row.user, row.outcome, row.note, row.created_at)


@dataclass(frozen=True)
class ConfirmedCase:
    """A scan with a confirmed outcome, ready to train on (``malignant`` is 0 or 1)."""

    analysis_id: int
    scan_sha256: str
    outcome: str
    malignant: int


def record_analysis(
    sessions: sessionmaker[Session], blobs: BlobStore, new: NewAnalysis
) -> StoredAnalysis:
    """Store the heatmap blob, then the analysis row and its audit event in one transaction.

    Raises:
        StorageError: the blob store or the database failed; no row was written.
    """
    details = dict(new.details)
    key = None
    if new.heatmap_png is not None:
        heatmap_sha256 = hashlib.sha256(new.heatmap_png).hexdigest()
        key = blobs.put(heatmap_sha256, new.heatmap_png)
        details["heatmap_sha256"] = heatmap_sha256
    row = Analysis(
        scan_id=new.scan_id,
        user=new.user,
        model_name=new.model_name,
        model_version=new.model_version,
        model_sha256=new.model_sha256,
        probability=new.probability,
        threshold=new.threshold,
        call=new.call,
        heatmap_blob_key=key,
        details=details,
    )
    with sessions() as session, database_errors(session_engine(session), "recording the analysis"):
        session.add(row)
        session.flush()
        record_audit(
            session,
            user=new.user,
            action="analysis.created",
            target=f"analysis:{row.id}",
            details={"scan_id": new.scan_id, "model": f"{new.model_name}/{new.model_version}"},
        )
        refresh_exams_of_scan(session, new.user, new.scan_id, at=row.created_at)
        scan_sha256 = session.scalars(select(Scan.sha256).where(Scan.id == new.scan_id)).one()
        session.commit()
    return StoredAnalysis.from_row(row, scan_sha256)


def list_analyses(
    sessions: sessionmaker[Session], user: str, limit: int = 50
) -> list[StoredAnalysis]:
    """The user's own analyses, newest first, at most ``limit``."""
    query = (
        select(Analysis, Scan.sha256)
        .join(Scan, Scan.id == Analysis.scan_id)
        .where(Analysis.user == user)
        .order_by(Analysis.id.desc())
        .limit(limit)
    )
    with sessions() as session, database_errors(session_engine(session), "listing analyses"):
        return [StoredAnalysis.from_row(row, sha256) for row, sha256 in session.execute(query)]


def get_analysis(sessions: sessionmaker[Session], analysis_id: int, user: str) -> StoredAnalysis:
    """The user's analysis ``analysis_id``; `AnalysisNotFound` if it is not theirs."""
    with sessions() as session, database_errors(session_engine(session), "reading the analysis"):
        row, sha256 = _owned(session, analysis_id, user)
        return StoredAnalysis.from_row(row, sha256)


def record_feedback(
    sessions: sessionmaker[Session], analysis_id: int, user: str, outcome: str, note: str = ""
) -> StoredFeedback:
    """Append the confirmed outcome of the user's own analysis, with an audit event.

    The first outcome is ``feedback.recorded``; a different one later is
    ``feedback.changed`` (naming the outcome it replaces); the outcome already
    recorded is returned as it is, and nothing is written.

    Raises:
        InvalidOutcome: ``outcome`` is not one of `FEEDBACK_OUTCOMES`.
        AnalysisNotFound: the analysis does not exist or is another user's.
    """
    if outcome not in FEEDBACK_OUTCOMES:
        raise InvalidOutcome(
            f"{outcome!r} is not a known outcome; choose one of: {', '.join(FEEDBACK_OUTCOMES)}"
        )
    with sessions() as session, database_errors(session_engine(session), "recording the feedback"):
        analysis, _ = _owned(session, analysis_id, user)
        previous = _newest_feedback(session, analysis_id)
        if previous is not None and previous.outcome == outcome:
            return StoredFeedback.from_row(previous)
        row = Feedback(analysis_id=analysis_id, user=user, outcome=outcome, note=note)
        session.add(row)
        session.flush()
        details: dict[str, Any] = {"feedback_id": row.id, "outcome": outcome}
        if previous is not None:
            details |= {"previous_outcome": previous.outcome, "previous_feedback_id": previous.id}
        record_audit(
            session,
            user=user,
            action="feedback.recorded" if previous is None else "feedback.changed",
            target=f"analysis:{analysis_id}",
            details=details,
        )
        refresh_exams_of_scan(session, user, analysis.scan_id, at=row.created_at)
        session.commit()
    return StoredFeedback.from_row(row)


def _newest_feedback(session: Session, analysis_id: int) -> Feedback | None:
    return session.scalars(
        select(Feedback)
        .where(Feedback.analysis_id == analysis_id)
        .order_by(Feedback.id.desc())
        .limit(1)
    ).first()


def latest_feedback(
    sessions: sessionmaker[Session], analysis_id: int, user: str
) -> StoredFeedback | None:
    """The newest feedback on the user's own analysis, None if there is none yet.

    Raises:
        AnalysisNotFound: the analysis does not exist or is another user's.
    """
    with sessions() as session, database_errors(session_engine(session), "reading the feedback"):
        _owned(session, analysis_id, user)
        row = _newest_feedback(session, analysis_id)
        return None if row is None else StoredFeedback.from_row(row)


def confirmed_cases(sessions: sessionmaker[Session]) -> list[ConfirmedCase]:
    """Every analysed scan with feedback, labelled by its analysis' newest feedback."""
    newest = select(func.max(Feedback.id).label("id")).group_by(Feedback.analysis_id).subquery()
    query = (
        select(Feedback.analysis_id, Scan.sha256, Feedback.outcome)
        .join(newest, newest.c.id == Feedback.id)
        .join(Analysis, Analysis.id == Feedback.analysis_id)
        .join(Scan, Scan.id == Analysis.scan_id)
        .order_by(Feedback.analysis_id)
    )
    with sessions() as session, database_errors(session_engine(session), "listing confirmed cases"):
        return [
            ConfirmedCase(analysis_id, sha256, outcome, OUTCOME_LABELS[outcome])
            for analysis_id, sha256, outcome in session.execute(query)
        ]


def _owned(session: Session, analysis_id: int, user: str) -> tuple[Analysis, str]:
    found = session.execute(
        select(Analysis, Scan.sha256)
        .join(Scan, Scan.id == Analysis.scan_id)
        .where(Analysis.id == analysis_id, Analysis.user == user)
    ).first()
    if found is None:
        # The same answer for "someone else's" and "missing": nothing leaks.
        raise AnalysisNotFound(f"analysis {analysis_id} is not among {user}'s analyses")
    return found[0], found[1]
