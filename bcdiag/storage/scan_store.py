"""Storing uploaded scans so that nothing is lost and nothing is half-kept.

Order of work for one upload: decide its case (`bcdiag.storage.exam_store.placement`),
look the hash up in the database (which also proves the database answers), put the blob
(atomic, idempotent), then insert the scan row (unless the same bytes are already
stored), the user's upload row, its place in an exam and the audit event in one
transaction. A failure at any step leaves no row without its blob; at worst a blob
without a row, which the retry reuses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bcdiag.errors import BcdiagError
from bcdiag.storage.blobs import BlobStore
from bcdiag.storage.database import database_errors, session_engine
from bcdiag.storage.exam_store import (
    PatientIdentity,
    Placement,
    file_upload,
    placement,
)
from bcdiag.storage.models import AuditEvent, Scan, Upload

STORE_ATTEMPTS = 3
"""Tries of one upload's transaction; a concurrent upload may create its scan, case or
exam first, and the next try finds them."""


class ScanNotFound(BcdiagError):
    """No stored scan has that id."""


@dataclass(frozen=True)
class StoredScan:
    """A scan row as plain data; ``is_new`` says whether this call created it."""

    id: int
    sha256: str
    blob_key: str
    filename: str
    format: str
    modality: str | None
    rows: int | None
    columns: int | None
    metadata: dict[str, Any]
    uploaded_by: str
    created_at: datetime
    is_new: bool = False

    @classmethod
    def from_row(cls, row: Scan, *, is_new: bool = False) -> StoredScan:
        """Copy an ORM row into plain data."""
        return cls(
            id=row.id,
            sha256=row.sha256,
            blob_key=row.blob_key,
            filename=row.filename,
            format=row.format,
            modality=row.modality,
            rows=row.rows,
            columns=row.columns,
            metadata=dict(row.scan_metadata),
            uploaded_by=row.uploaded_by,
            created_at=row.created_at,
            is_new=is_new,
        )


def record_audit(
    session: Session,
    *,
    user: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Add an audit event to ``session``; it is kept only if the session commits."""
    session.add(AuditEvent(user=user, action=action, target=target, details=dict(details or {})))


def _optional_int(metadata: Mapping[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    return None if value is None else int(value)


def store_scan(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    data: bytes,
    *,
    filename: str,
    metadata: Mapping[str, Any],
    user: str,
    identity: PatientIdentity | None = None,
    case_name: str | None,
) -> StoredScan:
    """Store ``data`` once, record ``user``'s upload and file it under its case and exam.

    The blob goes first; then the scan row (unless the same bytes are stored already,
    also by another process at the same moment), the upload, its place in an exam (see
    `bcdiag.storage.exam_store`) and a ``scan.stored`` event, in one transaction.

    Args:
        sessions: session factory of a migrated database.
        blobs: where the bytes go.
        data: the uploaded file, unchanged.
        filename: the name the user gave the file.
        metadata: the scan's header summary; must hold ``format``, may hold
            ``modality``, ``rows``, ``columns``. Stored whole as JSON.
        user: who uploaded it.
        identity: the DICOM header's patient and study (None for PNG and JPEG).
        case_name: the case to file the upload under when ``identity`` has no
            PatientID: a new name or the patient key of one of ``user``'s cases.

    Raises:
        CaseNameRequired: no PatientID and no case name; nothing was written.
        StorageError: the database or blob store failed; no row was written.
    """
    scan_format = metadata.get("format")
    if not isinstance(scan_format, str) or not scan_format:
        raise ValueError("metadata must name the scan's format, e.g. {'format': 'dicom'}")
    where = placement(filename=filename, metadata=metadata, identity=identity, case_name=case_name)
    sha256 = hashlib.sha256(data).hexdigest()
    with sessions() as session:
        engine = session_engine(session)
        with database_errors(engine, "looking up the scan"):  # fails before any blob if down
            session.scalar(select(Scan.id).where(Scan.sha256 == sha256))
        fields: dict[str, Any] = {
            "sha256": sha256,
            "blob_key": blobs.put(sha256, data),  # also restores the blob of an existing row
            "filename": filename,
            "format": scan_format,
            "modality": metadata.get("modality"),
            "rows": _optional_int(metadata, "rows"),
            "columns": _optional_int(metadata, "columns"),
            "scan_metadata": dict(metadata),
            "uploaded_by": user,
        }
        with database_errors(engine, "storing the upload"):
            for _ in range(STORE_ATTEMPTS - 1):
                try:
                    return _store_once(session, fields, filename, user, where)
                except IntegrityError:
                    session.rollback()  # another writer stored this scan, case or exam first
            return _store_once(session, fields, filename, user, where)


def _store_once(
    session: Session, fields: dict[str, Any], filename: str, user: str, where: Placement
) -> StoredScan:
    """One attempt: the scan row if new, the upload, its exam, the audit event; committed.

    Raises `IntegrityError` when another writer stored the same scan, case or exam first.
    """
    row = session.scalar(select(Scan).where(Scan.sha256 == fields["sha256"]))
    is_new = row is None
    if row is None:
        row = Scan(**fields)
        session.add(row)
        session.flush()
    upload = Upload(scan_id=row.id, user=user, filename=filename)
    session.add(upload)
    session.flush()
    exam = file_upload(session, upload, where)
    record_audit(
        session,
        user=user,
        action="scan.stored",
        target=f"scan:{row.id}",
        details={"sha256": row.sha256, "filename": filename, "new": is_new, "exam_id": exam.id},
    )
    session.commit()
    return StoredScan.from_row(row, is_new=is_new)


def get_scan(sessions: sessionmaker[Session], scan_id: int) -> StoredScan:
    """The scan ``scan_id``; `ScanNotFound` if there is none."""
    with sessions() as session:
        with database_errors(session_engine(session), "reading the scan"):
            row = session.get(Scan, scan_id)
        if row is None:
            raise ScanNotFound(f"there is no stored scan {scan_id}")
        return StoredScan.from_row(row)


def list_scans(sessions: sessionmaker[Session]) -> list[StoredScan]:
    """Every stored scan, oldest first."""
    with sessions() as session:
        with database_errors(session_engine(session), "listing scans"):
            rows = session.scalars(select(Scan).order_by(Scan.id)).all()
        return [StoredScan.from_row(row) for row in rows]
