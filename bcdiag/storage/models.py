"""The relational schema: scans, their uploads, analyses, feedback and the audit trail;
the cases and exams uploads are filed under.

Uploads, analyses, feedback and audit events are append-only. The database enforces it
with triggers that reject UPDATE and DELETE (created by migrations 0001 and 0002); these
models only describe the columns. Cases, exams and exam images may be updated: an exam
keeps summary columns (image count, state, score, last activity) current so the worklist
reads them without aggregating. The schema is built by the migrations, never by
``metadata.create_all``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

FEEDBACK_OUTCOMES = ("biopsy-malignant", "biopsy-benign", "normal-follow-up")
"""What a clinician may report back about an analysed scan."""

APPEND_ONLY_TABLES = ("uploads", "analyses", "feedback", "audit_events")
"""Tables whose rows the database refuses to change or delete."""

EXAM_STATES = ("not analysed", "analysed", "outcome recorded")
"""An exam's states in workflow order; `Exam.state` holds the index."""

CASE_SOURCES = ("dicom", "named")
"""How a case was made: from a DICOM PatientID, or named by the clinician."""

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored and returned in UTC (SQLite keeps no zone, so we restore it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no time zone; pass an aware datetime")
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base whose constraint names match the migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Scan(Base):
    """One uploaded file, stored once per content (sha256) in the blob store."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    blob_key: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(16))
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    scan_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", Json)
    uploaded_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utc_now, server_default=func.current_timestamp()
    )


class Upload(Base):
    """One file one user uploaded; several uploads may share a scan (same content)."""

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    user: Mapped[str] = mapped_column(String(255), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utc_now, server_default=func.current_timestamp()
    )


class Analysis(Base):
    """One model's reading of one scan (immutable)."""

    __tablename__ = "analyses"
    __table_args__ = (
        CheckConstraint("probability >= 0 AND probability <= 1", name="probability"),
        CheckConstraint("threshold >= 0 AND threshold <= 1", name="threshold"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), index=True)
    user: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utc_now, server_default=func.current_timestamp()
    )
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    probability: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    call: Mapped[str] = mapped_column(String(32))
    heatmap_blob_key: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class Feedback(Base):
    """What was later found for an analysed scan (immutable)."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint(
            "outcome IN (" + ", ".join(f"'{o}'" for o in FEEDBACK_OUTCOMES) + ")",
            name="outcome",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"), index=True)
    user: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utc_now, server_default=func.current_timestamp()
    )


class AuditEvent(Base):
    """Who did what to which object, and when (immutable)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utc_now, server_default=func.current_timestamp(), index=True
    )
    user: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class Case(Base):
    """One patient as one clinician sees them: a DICOM PatientID or a name they gave.

    Each clinician has their own cases; two uploading the same study get one each.
    """

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("owner", "patient_key", name="uq_cases_owner_patient_key"),
        CheckConstraint(
            "source IN (" + ", ".join(f"'{s}'" for s in CASE_SOURCES) + ")", name="source"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    patient_key: Mapped[str] = mapped_column(String(255))
    patient_name: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utc_now, server_default=func.current_timestamp()
    )


class Exam(Base):
    """One study of a case (a StudyInstanceUID), or a named case's images of one modality
    uploaded on one day; with the summary the worklist shows.

    ``exam_key`` is the StudyInstanceUID, else ``"<modality> <upload date>"``.
    ``exam_date`` is the study date, else the first upload's date (UTC). ``owner`` and
    ``patient_key`` repeat the case's, so the worklist sorts and filters on this table's
    indexes alone. ``score`` is the highest
    probability among the newest analyses of its images (None before any); ``state`` is
    the least advanced of its images' states.
    """

    __tablename__ = "exams"
    __table_args__ = (
        UniqueConstraint("case_id", "exam_key", name="uq_exams_case_id_exam_key"),
        CheckConstraint(f"state >= 0 AND state < {len(EXAM_STATES)}", name="state"),
        CheckConstraint("score >= 0 AND score <= 1", name="score"),
        Index("ix_exams_owner_exam_date", "owner", "exam_date", "id"),
        Index("ix_exams_owner_patient_key", "owner", "patient_key", "id"),
        Index("ix_exams_owner_state_exam_date", "owner", "state", "exam_date", "id"),
        Index("ix_exams_owner_score", "owner", "score", "id"),
        Index("ix_exams_owner_last_activity_at", "owner", "last_activity_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    owner: Mapped[str] = mapped_column(String(255))
    patient_key: Mapped[str] = mapped_column(String(255))
    exam_key: Mapped[str] = mapped_column(String(128))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    study_description: Mapped[str | None] = mapped_column(String(255))
    study_date: Mapped[date | None] = mapped_column(Date)
    modality: Mapped[str | None] = mapped_column(String(16))
    uploaded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    exam_date: Mapped[date] = mapped_column(Date)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float | None] = mapped_column(Float)
    last_activity_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ExamImage(Base):
    """One scan in one exam, at the newest upload that filed it there."""

    __tablename__ = "exam_images"
    __table_args__ = (
        UniqueConstraint("exam_id", "scan_id", name="uq_exam_images_exam_id_scan_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exam_id: Mapped[int] = mapped_column(ForeignKey("exams.id"))
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), index=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id"))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    laterality: Mapped[str | None] = mapped_column(String(16))
    view: Mapped[str | None] = mapped_column(String(16))
