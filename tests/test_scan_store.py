"""Storing scans loses nothing: idempotent, race-safe, and whole or not at all."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from bcdiag.errors import StorageError
from bcdiag.storage import Storage, StoredScan
from bcdiag.storage.blobs import FileBlobStore
from bcdiag.storage.models import AuditEvent, Scan

METADATA = {"format": "dicom", "modality": "MG", "rows": 1108, "columns": 716, "view": "CC"}


@pytest.fixture
def scan_bytes(data_dir: Path) -> bytes:
    return next((data_dir / "dicom" / "derived").glob("cbisddsm_*.dcm")).read_bytes()


def _count(storage: Storage, model: type[Scan] | type[AuditEvent]) -> int:
    with storage.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _store(storage: Storage, data: bytes, user: str = "alice") -> StoredScan:
    return storage.store_scan(
        data,
        filename="left_cc.dcm",
        metadata=METADATA,
        user=user,
        identity=None,
        case_name="Case A",
    )


def _blob_files(storage: Storage) -> list[Path]:
    assert isinstance(storage.blobs, FileBlobStore)
    return sorted(p for p in storage.blobs.root.rglob("*") if p.is_file())


def test_storing_the_same_bytes_twice_gives_one_row(storage: Storage, scan_bytes: bytes) -> None:
    first = _store(storage, scan_bytes)
    again = _store(storage, scan_bytes, user="bob")
    assert first.is_new
    assert not again.is_new
    assert again.id == first.id
    assert first.sha256 == hashlib.sha256(scan_bytes).hexdigest()
    assert (first.format, first.modality, first.rows, first.columns) == ("dicom", "MG", 1108, 716)
    assert first.metadata == METADATA
    assert storage.scan_bytes(again) == scan_bytes
    assert _count(storage, Scan) == 1
    with storage.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.action, e.user, e.details["new"]) for e in events] == [
        ("scan.stored", "alice", True),
        ("scan.stored", "bob", False),
    ]


class RaceBarrierStore(FileBlobStore):
    """Holds each writer until both have looked the hash up, forcing the race."""

    def __init__(self, root: Path, parties: int) -> None:
        super().__init__(root)
        self.barrier = threading.Barrier(parties, timeout=30)

    def put(self, sha256: str, data: bytes) -> str:
        self.barrier.wait()
        return super().put(sha256, data)


def test_concurrent_store_of_the_same_bytes_gives_one_row(
    storage: Storage, scan_bytes: bytes, tmp_path: Path
) -> None:
    racing = Storage(storage.engine, storage.sessions, RaceBarrierStore(tmp_path / "race", 2))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_store, racing, scan_bytes, user) for user in ("alice", "bob")]
        results = [future.result() for future in futures]
    assert len({r.id for r in results}) == 1
    assert sorted(r.is_new for r in results) == [False, True]
    assert _count(storage, Scan) == 1
    assert _count(storage, AuditEvent) == 2


@pytest.fixture(params=["sqlite-in-missing-folder", "postgres-nobody-listens"])
def unreachable_url(
    request: pytest.FixtureRequest, tmp_path: Path, unreachable_postgres_url: str
) -> str:
    if request.param == "sqlite-in-missing-folder":
        return f"sqlite:///{tmp_path / 'missing' / 'bcdiag.sqlite'}"
    return unreachable_postgres_url


def test_unreachable_database_fails_before_any_blob_is_written(
    unreachable_url: str, tmp_path: Path, scan_bytes: bytes
) -> None:
    blobs = tmp_path / "blobs"
    with (
        Storage.open(unreachable_url, blobs.as_uri()) as storage,
        pytest.raises(StorageError, match="looking up the scan") as raised,
    ):
        _store(storage, scan_bytes)
    assert "s3cret" not in str(raised.value)
    assert not blobs.exists()


class DiskFullMidway(FileBlobStore):
    """A file store whose disk fills up after half of the bytes are written."""

    def _write_all(self, fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")


def test_blob_write_failing_midway_keeps_no_blob_and_no_row(
    storage: Storage, scan_bytes: bytes, tmp_path: Path
) -> None:
    broken = Storage(storage.engine, storage.sessions, DiskFullMidway(tmp_path / "full"))
    with pytest.raises(StorageError, match="No space left"):
        _store(broken, scan_bytes)
    assert [p for p in (tmp_path / "full").rglob("*") if p.is_file()] == []
    assert _count(storage, Scan) == 0
    assert _count(storage, AuditEvent) == 0
    assert _store(storage, scan_bytes).is_new


@pytest.fixture
def fail_insert_into(storage: Storage) -> Iterator[list[str]]:
    """Tables named in the yielded list have their next INSERT fail in the database."""
    tables: list[str] = []

    def fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        for table in tables:
            if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()} "):
                tables.remove(table)
                raise OperationalError(statement, None, Exception("disk I/O error (injected)"))

    engine: Engine = storage.engine
    event.listen(engine, "before_cursor_execute", fail)
    yield tables
    event.remove(engine, "before_cursor_execute", fail)


@pytest.mark.parametrize("table", ["scans", "audit_events"])
def test_insert_failing_after_the_blob_keeps_no_row_and_a_retry_succeeds(
    storage: Storage, scan_bytes: bytes, fail_insert_into: list[str], table: str
) -> None:
    fail_insert_into.append(table)
    with pytest.raises(StorageError, match="injected"):
        _store(storage, scan_bytes)
    assert _count(storage, Scan) == 0
    assert _count(storage, AuditEvent) == 0
    assert len(_blob_files(storage)) == 1  # an orphan blob, reused by the retry
    retried = _store(storage, scan_bytes)
    assert retried.is_new
    assert storage.scan_bytes(retried) == scan_bytes
    assert _count(storage, Scan) == 1
    assert len(_blob_files(storage)) == 1


def test_a_lost_blob_is_restored_by_storing_the_scan_again(
    storage: Storage, scan_bytes: bytes
) -> None:
    stored = _store(storage, scan_bytes)
    for path in _blob_files(storage):
        path.unlink()
    with pytest.raises(StorageError, match="missing"):
        storage.scan_bytes(stored)
    _store(storage, scan_bytes)
    assert storage.scan_bytes(stored) == scan_bytes


def test_metadata_must_name_the_format(storage: Storage) -> None:
    with pytest.raises(ValueError, match="format"):
        storage.store_scan(
            b"x", filename="x", metadata={}, user="alice", identity=None, case_name="Case A"
        )


@pytest.mark.gcs
def test_scans_can_live_in_gcs(migrated_url: str, gcs_url: str, scan_bytes: bytes) -> None:
    with Storage.open(migrated_url, gcs_url) as storage:
        stored = _store(storage, scan_bytes)
        assert storage.scan_bytes(stored) == scan_bytes
        assert not _store(storage, scan_bytes).is_new
