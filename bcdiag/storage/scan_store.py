"""Storing uploaded scans so that nothing is lost and nothing is half-kept.

Order of work for one upload: look the hash up in the database (which also
proves the database answers), put the blob (atomic, idempotent), then insert the
scan row (unless the same bytes are already stored), the user's upload row and the
audit event in one transaction. A failure at any step leaves no
row without its blob; at worst a blob without a row, which the retry reuses.
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
from bcdiag.storage.database import database_errors
from bcdiag.storage.models import AuditEvent, Scan, Upload


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
) -> StoredScan:
    """Store ``data`` once: blob first, then its row, the upload and a ``scan.stored`` event.

    Storing bytes already stored returns the existing row (``is_new=False``),
    also when another process stores them at the same moment; the upload is
    recorded either way, so the file is in ``user``'s history.

    Args:
        sessions: session factory of a migrated database.
        blobs: where the bytes go.
        data: the uploaded file, unchanged.
        filename: the name the user gave the file.
        metadata: the scan's header summary; must hold ``format``, may hold
            ``modality``, ``rows``, ``columns``. Stored whole as JSON.
        user: who uploaded it.

    Raises:
        StorageError: the database or blob store failed; no row was written.
    """
    scan_format = metadata.get("format")
    if not isinstance(scan_format, str) or not scan_format:
        raise ValueError("metadata must name the scan's format, e.g. {'format': 'dicom'}")
    sha256 = hashlib.sha256(data).hexdigest()
    with sessions() as session:
        engine = session.get_bind().engine
        with database_errors(engine, "looking up the scan"):
            existing = session.scalar(select(Scan).where(Scan.sha256 == sha256))
        key = blobs.put(sha256, data)  # also restores the blob of an existing row
        if existing is None:
            row = Scan(
                sha256=sha256,
                blob_key=key,
                filename=filename,
                format=scan_format,
                modality=metadata.get("modality"),
                rows=_optional_int(metadata, "rows"),
                columns=_optional_int(metadata, "columns"),
                scan_metadata=dict(metadata),
                uploaded_by=user,
            )
            with database_errors(engine, "storing the scan"):
                if _insert_unless_duplicate(session, row, filename):
                    return StoredScan.from_row(row, is_new=True)
                existing = session.scalars(select(Scan).where(Scan.sha256 == sha256)).one()
        with database_errors(engine, "recording the upload"):
            _audit_upload(session, existing, filename, user, is_new=False)
            session.commit()
        return StoredScan.from_row(existing)


def _insert_unless_duplicate(session: Session, row: Scan, filename: str) -> bool:
    """Insert ``row`` and its audit event; False if another writer stored it first."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        if session.scalar(select(Scan.id).where(Scan.sha256 == row.sha256)) is None:
            raise  # some other constraint failed
        return False
    _audit_upload(session, row, filename, row.uploaded_by, is_new=True)
    session.commit()
    return True


def _audit_upload(session: Session, row: Scan, filename: str, user: str, *, is_new: bool) -> None:
    session.add(Upload(scan_id=row.id, user=user, filename=filename))
    record_audit(
        session,
        user=user,
        action="scan.stored",
        target=f"scan:{row.id}",
        details={"sha256": row.sha256, "filename": filename, "new": is_new},
    )


def get_scan(sessions: sessionmaker[Session], scan_id: int) -> StoredScan:
    """The scan ``scan_id``; `ScanNotFound` if there is none."""
    with sessions() as session:
        with database_errors(session.get_bind().engine, "reading the scan"):
            row = session.get(Scan, scan_id)
        if row is None:
            raise ScanNotFound(f"there is no stored scan {scan_id}")
        return StoredScan.from_row(row)


def list_scans(sessions: sessionmaker[Session]) -> list[StoredScan]:
    """Every stored scan, oldest first."""
    with sessions() as session:
        with database_errors(session.get_bind().engine, "listing scans"):
            rows = session.scalars(select(Scan).order_by(Scan.id)).all()
        return [StoredScan.from_row(row) for row in rows]
