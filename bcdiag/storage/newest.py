"""The newest of append-only rows: a user's newest analysis of each scan, and the newest
feedback on each analysis (a later row supersedes an earlier one)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bcdiag.storage.models import Analysis, Feedback, Scan


def newest_analyses(
    session: Session, user: str, scan_ids: Collection[int]
) -> dict[int, tuple[Analysis, str]]:
    """scan id -> (``user``'s newest analysis of it, the scan's sha256); unanalysed absent."""
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


def newest_feedback(session: Session, analysis_ids: Collection[int]) -> dict[int, Feedback]:
    """analysis id -> its newest feedback; analyses without feedback are absent."""
    newest = (
        select(func.max(Feedback.id).label("id"))
        .where(Feedback.analysis_id.in_(analysis_ids))
        .group_by(Feedback.analysis_id)
        .subquery()
    )
    rows = session.scalars(select(Feedback).join(newest, newest.c.id == Feedback.id))
    return {row.analysis_id: row for row in rows}
