"""Cases and exams: uploads filed as patient -> exam -> images, with the summary columns
the worklist reads (image count, state, score, last activity).

Earlier uploads are filed so that nobody's history disappears. Their stored metadata
holds no PatientID, so each user's earlier uploads go to one case of theirs named
"Uploads without a case" (where uploads that name no case still go), and within it to
one exam per StudyInstanceUID (DICOM metadata) or per modality and upload day. An
analysis whose user has no upload of its scan (the same bytes uploaded by someone else
before 0002) gets that upload first, at the analysis' time, so it is filed too; the
downgrade keeps those upload rows (uploads are append-only).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

UNFILED_CASE = "Uploads without a case"
STATES = 3  # not analysed, analysed, outcome recorded
NOW = sa.func.current_timestamp()
TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    _create_tables()
    _file_earlier_uploads()


def _create_tables() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("patient_key", sa.String(255), nullable=False),
        sa.Column("patient_name", sa.String(255), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("owner", "patient_key", name="uq_cases_owner_patient_key"),
        sa.CheckConstraint("source IN ('dicom', 'named')", name="ck_cases_source"),
    )
    op.create_table(
        "exams",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("patient_key", sa.String(255), nullable=False),
        sa.Column("exam_key", sa.String(128), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=True),
        sa.Column("accession_number", sa.String(64), nullable=True),
        sa.Column("study_description", sa.String(255), nullable=True),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("uploaded_at", TIMESTAMP, nullable=False),
        sa.Column("exam_date", sa.Date(), nullable=False),
        sa.Column("image_count", sa.Integer(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("last_activity_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exams"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_exams_case_id_cases"),
        sa.UniqueConstraint("case_id", "exam_key", name="uq_exams_case_id_exam_key"),
        sa.CheckConstraint(f"state >= 0 AND state < {STATES}", name="ck_exams_state"),
        sa.CheckConstraint("score >= 0 AND score <= 1", name="ck_exams_score"),
    )
    for name, columns in (
        ("ix_exams_owner_exam_date", ["owner", "exam_date", "id"]),
        ("ix_exams_owner_patient_key", ["owner", "patient_key", "id"]),
        ("ix_exams_owner_state_exam_date", ["owner", "state", "exam_date", "id"]),
        ("ix_exams_owner_score", ["owner", "score", "id"]),
        ("ix_exams_owner_last_activity_at", ["owner", "last_activity_at", "id"]),
    ):
        op.create_index(name, "exams", columns)
    op.create_table(
        "exam_images",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("exam_id", sa.Integer(), nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=True),
        sa.Column("laterality", sa.String(16), nullable=True),
        sa.Column("view", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_exam_images"),
        sa.ForeignKeyConstraint(["exam_id"], ["exams.id"], name="fk_exam_images_exam_id_exams"),
        sa.ForeignKeyConstraint(["scan_id"], ["scans.id"], name="fk_exam_images_scan_id_scans"),
        sa.ForeignKeyConstraint(
            ["upload_id"], ["uploads.id"], name="fk_exam_images_upload_id_uploads"
        ),
        sa.UniqueConstraint("exam_id", "scan_id", name="uq_exam_images_exam_id_scan_id"),
    )
    op.create_index("ix_exam_images_scan_id", "exam_images", ["scan_id"])


# The tables as this revision knows them (never the models, which move on).
scans = sa.table(
    "scans",
    sa.column("id", sa.Integer),
    sa.column("filename", sa.String),
    sa.column("modality", sa.String),
    sa.column("metadata", JSON),
)
uploads = sa.table(
    "uploads",
    sa.column("id", sa.Integer),
    sa.column("scan_id", sa.Integer),
    sa.column("user", sa.String),
    sa.column("filename", sa.String),
    sa.column("created_at", TIMESTAMP),
)
analyses = sa.table(
    "analyses",
    sa.column("id", sa.Integer),
    sa.column("scan_id", sa.Integer),
    sa.column("user", sa.String),
    sa.column("probability", sa.Float),
    sa.column("created_at", TIMESTAMP),
)
feedback = sa.table(
    "feedback",
    sa.column("analysis_id", sa.Integer),
    sa.column("created_at", TIMESTAMP),
)
cases = sa.table(
    "cases",
    sa.column("id", sa.Integer),
    sa.column("owner", sa.String),
    sa.column("patient_key", sa.String),
    sa.column("source", sa.String),
)
exams = sa.table(
    "exams",
    sa.column("id", sa.Integer),
    sa.column("case_id", sa.Integer),
    sa.column("owner", sa.String),
    sa.column("patient_key", sa.String),
    sa.column("exam_key", sa.String),
    sa.column("study_instance_uid", sa.String),
    sa.column("modality", sa.String),
    sa.column("uploaded_at", TIMESTAMP),
    sa.column("exam_date", sa.Date),
    sa.column("image_count", sa.Integer),
    sa.column("state", sa.Integer),
    sa.column("score", sa.Float),
    sa.column("last_activity_at", TIMESTAMP),
)
exam_images = sa.table(
    "exam_images",
    sa.column("exam_id", sa.Integer),
    sa.column("scan_id", sa.Integer),
    sa.column("upload_id", sa.Integer),
    sa.column("laterality", sa.String),
    sa.column("view", sa.String),
)


def _file_earlier_uploads() -> None:
    connection = op.get_bind()
    _upload_what_was_only_analysed(connection)
    newest: dict[tuple[str, int], Any] = {}  # (user, scan) -> newest analysis row
    for row in connection.execute(sa.select(analyses).order_by(analyses.c.id)):
        newest[(row.user, row.scan_id)] = row
    feedback_at: dict[int, datetime] = {}
    for analysis_id, at in connection.execute(sa.select(feedback)):
        feedback_at[analysis_id] = max(at, feedback_at.get(analysis_id, at))
    case_ids: dict[str, int] = {}
    exam_ids: dict[tuple[str, str], int] = {}
    images: dict[int, dict[int, Any]] = defaultdict(dict)  # exam -> scan -> newest upload
    rows = connection.execute(
        sa.select(uploads, scans.c.modality, scans.c.metadata)
        .join(scans, scans.c.id == uploads.c.scan_id)
        .order_by(uploads.c.id)
    )
    for upload in rows:
        user, metadata = upload.user, upload.metadata or {}
        if user not in case_ids:
            case_ids[user] = _insert(
                connection, cases, owner=user, patient_key=UNFILED_CASE, source="named"
            )
        study = _text(metadata.get("study_instance_uid"), 64)
        day = _utc_day(upload.created_at)
        key = study or f"{_text(upload.modality, 16) or 'unknown'} {day:%Y-%m-%d}"
        if (user, key) not in exam_ids:
            exam_ids[(user, key)] = _insert(
                connection,
                exams,
                case_id=case_ids[user],
                owner=user,
                patient_key=UNFILED_CASE,
                exam_key=key,
                study_instance_uid=study,
                modality=_text(upload.modality, 16),
                uploaded_at=upload.created_at,
                exam_date=day,
                image_count=0,
                state=0,
                last_activity_at=upload.created_at,
            )
        images[exam_ids[(user, key)]][upload.scan_id] = upload
    for exam_id, by_scan in images.items():
        _file_images(connection, exam_id, by_scan, newest, feedback_at)


def _upload_what_was_only_analysed(connection: sa.Connection) -> None:
    uploaded = sa.select(uploads.c.id).where(
        uploads.c.scan_id == analyses.c.scan_id, uploads.c.user == analyses.c.user
    )
    missing = connection.execute(
        sa.select(analyses.c.scan_id, analyses.c.user, sa.func.min(analyses.c.created_at))
        .where(~uploaded.exists())
        .group_by(analyses.c.scan_id, analyses.c.user)
    ).all()
    for scan_id, user, first_at in missing:
        filename = connection.scalar(sa.select(scans.c.filename).where(scans.c.id == scan_id))
        connection.execute(
            uploads.insert().values(
                scan_id=scan_id, user=user, filename=filename, created_at=first_at
            )
        )


def _file_images(
    connection: sa.Connection,
    exam_id: int,
    by_scan: dict[int, Any],
    newest: dict[tuple[str, int], Any],
    feedback_at: dict[int, datetime],
) -> None:
    states, scores, times = [], [], []
    for scan_id, upload in by_scan.items():
        metadata = upload.metadata or {}
        connection.execute(
            exam_images.insert().values(
                exam_id=exam_id,
                scan_id=scan_id,
                upload_id=upload.id,
                laterality=_text(metadata.get("laterality"), 16),
                view=_text(metadata.get("view"), 16),
            )
        )
        times.append(upload.created_at)
        analysis = newest.get((upload.user, scan_id))
        if analysis is None:
            states.append(0)
            continue
        scores.append(analysis.probability)
        times.append(analysis.created_at)
        if analysis.id in feedback_at:
            states.append(2)
            times.append(feedback_at[analysis.id])
        else:
            states.append(1)
    connection.execute(
        exams.update()
        .where(exams.c.id == exam_id)
        .values(
            image_count=len(states),
            state=min(states),
            score=max(scores, default=None),
            last_activity_at=max(times),
        )
    )


def _insert(connection: sa.Connection, table: sa.TableClause, **values: Any) -> int:
    return int(
        connection.execute(table.insert().values(**values).returning(table.c.id)).scalar_one()
    )


def _utc_day(at: datetime) -> date:
    """The UTC day of a stored time (SQLite returns UTC without a zone)."""
    return (at if at.tzinfo is None else at.astimezone(UTC)).date()


def _text(value: Any, limit: int) -> str | None:
    return None if value in (None, "") else str(value)[:limit]


def downgrade() -> None:
    op.drop_table("exam_images")
    op.drop_table("exams")
    op.drop_table("cases")
