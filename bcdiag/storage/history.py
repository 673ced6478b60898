"""A user's history: every scan they uploaded, with its newest analysis and outcome.

A scan stored without an analysis (no model for its modality yet, the model
registry unreachable) is listed too, so it can be analysed later. A scan uploaded
more than once by the same user is one entry, at its latest upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bcdiag.storage.analysis_store import StoredAnalysis, StoredFeedback
from bcdiag.storage.database import database_errors
from bcdiag.storage.models import Analysis, Feedback, Scan, Upload

NOT_ANALYSED, ANALYSED, OUTCOME_RECORDED = "not analysed", "analysed", "outcome recorded"


@dataclass(frozen=True)
class HistoryEntry:
    """One uploaded scan as its uploader sees it."""

    scan_id: int
    filename: str
    uploaded_at: datetime
    modality: str | None
    analysis: StoredAnalysis | None
    feedback: StoredFeedback | None

    @property
    def state(self) -> str:
        """Not analysed, analysed, or outcome recorded."""
        if self.analysis is None:
            return NOT_ANALYSED
        return ANALYSED if self.feedback is None else OUTCOME_RECORDED


def list_history(sessions: sessionmaker[Session], user: str, limit: int = 50) -> list[HistoryEntry]:
    """``user``'s uploaded scans, latest upload first, at most ``limit``."""
    latest_upload = (
        select(func.max(Upload.id).label("id"))
        .where(Upload.user == user)
        .group_by(Upload.scan_id)
        .subquery()
    )
    uploads = (
        select(Upload, Scan)
        .join(latest_upload, latest_upload.c.id == Upload.id)
        .join(Scan, Scan.id == Upload.scan_id)
        .order_by(Upload.id.desc())
        .limit(limit)
    )
    with sessions() as session, database_errors(session.get_bind().engine, "listing history"):
        rows = session.execute(uploads).all()
        scan_ids = [scan.id for _, scan in rows]
        analyses = _newest_analyses(session, user, scan_ids)
        feedback = _newest_feedback(session, [a.id for a, _ in analyses.values()])
    entries = []
    for upload, scan in rows:
        found = analyses.get(scan.id)
        analysis = None if found is None else StoredAnalysis.from_row(*found)
        entries.append(
            HistoryEntry(
                scan_id=scan.id,
                filename=upload.filename,
                uploaded_at=upload.created_at,
                modality=scan.modality,
                analysis=analysis,
                feedback=None if analysis is None else feedback.get(analysis.id),
            )
        )
    return entries


def _newest_analyses(
    session: Session, user: str, scan_ids: list[int]
) -> dict[int, tuple[Analysis, str]]:
    newest = (
        select(func.max(Analysis.id).label("id"))
        .where(Analysis.user == user, Analysis.scan_id.in_(scan_ids))
        .group_by(Analysis.scan_id)
        .subquery()
    )
    query = (
        select(Analysis, Scan.sha256)
        .join(newest, newest.c.id == Analysis.id)
        .join(Scan, Scan.id == Analysis.scan_id)
    )
    return {row.scan_id: (row, sha256) for row, sha256 in session.execute(query)}


def _newest_feedback(session: Session, analysis_ids: list[int]) -> dict[int, StoredFeedback]:
    newest = (
        select(func.max(Feedback.id).label("id"))
        .where(Feedback.analysis_id.in_(analysis_ids))
        .group_by(Feedback.analysis_id)
        .subquery()
    )
    rows = session.scalars(select(Feedback).join(newest, newest.c.id == Feedback.id))
    return {row.analysis_id: StoredFeedback.from_row(row) for row in rows}
