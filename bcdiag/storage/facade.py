"""`Storage`: the database and the blob store as the one object app and CLI use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bcdiag.settings import Settings, get_settings
from bcdiag.storage import analysis_store, scan_store, worklist
from bcdiag.storage.analysis_store import (
    ConfirmedCase,
    NewAnalysis,
    StoredAnalysis,
    StoredFeedback,
)
from bcdiag.storage.blob_schemes import open_blob_store
from bcdiag.storage.blobs import BlobStore
from bcdiag.storage.database import (
    database_errors,
    open_engine,
    require_current_schema,
    session_factory,
)
from bcdiag.storage.exam_store import PatientIdentity
from bcdiag.storage.scan_store import StoredScan
from bcdiag.storage.worklist import CaseSummary, ExamDetail, WorklistPage, WorklistSort


@dataclass(frozen=True)
class Storage:
    """An engine, its session factory and a blob store, used together."""

    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore

    @classmethod
    def open(cls, database_url: str, storage_url: str) -> Storage:
        """Storage on the given URLs; nothing is checked or migrated."""
        blobs = open_blob_store(storage_url)
        engine = open_engine(database_url)
        return cls(engine=engine, sessions=session_factory(engine), blobs=blobs)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Storage:
        """Storage as configured; `StorageError` unless the database is migrated and reachable."""
        settings = settings or get_settings()
        storage = cls.open(settings.resolved_database_url, settings.resolved_storage_url)
        try:
            require_current_schema(storage.engine)
        except BaseException:
            storage.close()
            raise
        return storage

    def store_scan(
        self,
        data: bytes,
        *,
        filename: str,
        metadata: Mapping[str, Any],
        user: str,
        identity: PatientIdentity | None = None,
        case_name: str | None,
    ) -> StoredScan:
        """See `bcdiag.storage.scan_store.store_scan`."""
        return scan_store.store_scan(
            self.sessions,
            self.blobs,
            data,
            filename=filename,
            metadata=metadata,
            user=user,
            identity=identity,
            case_name=case_name,
        )

    def record_audit(
        self, *, user: str, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """Record one audit event in its own transaction."""
        with self.sessions() as session, database_errors(self.engine, "recording an audit event"):
            scan_store.record_audit(
                session, user=user, action=action, target=target, details=details
            )
            session.commit()

    def list_scans(self) -> list[StoredScan]:
        """Every stored scan, oldest first."""
        return scan_store.list_scans(self.sessions)

    def get_scan(self, scan_id: int) -> StoredScan:
        """The stored scan ``scan_id``; `ScanNotFound` if there is none."""
        return scan_store.get_scan(self.sessions, scan_id)

    def worklist(
        self,
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
        """See `bcdiag.storage.worklist.worklist`."""
        return worklist.worklist(
            self.sessions,
            user,
            sort=sort,
            descending=descending,
            patient=patient,
            state=state,
            date_from=date_from,
            date_to=date_to,
            min_score=min_score,
            offset=offset,
            limit=limit,
        )

    def exam(self, user: str, exam_id: int) -> ExamDetail:
        """The user's exam with its images; `ExamNotFound` if missing or another user's."""
        return worklist.exam(self.sessions, user, exam_id)

    def list_cases(self, user: str) -> list[CaseSummary]:
        """The user's cases, for choosing the case a PNG or JPEG upload joins."""
        return worklist.list_cases(self.sessions, user)

    def scan_bytes(self, scan: StoredScan) -> bytes:
        """The stored file of ``scan``, checked against its hash."""
        return self.blobs.get(scan.sha256)

    def record_analysis(self, new: NewAnalysis) -> StoredAnalysis:
        """See `bcdiag.storage.analysis_store.record_analysis`."""
        return analysis_store.record_analysis(self.sessions, self.blobs, new)

    def list_analyses(self, user: str, limit: int = 50) -> list[StoredAnalysis]:
        """The user's own analyses, newest first."""
        return analysis_store.list_analyses(self.sessions, user, limit)

    def get_analysis(self, analysis_id: int, user: str) -> StoredAnalysis:
        """The user's analysis; `AnalysisNotFound` if it is missing or another user's."""
        return analysis_store.get_analysis(self.sessions, analysis_id, user)

    def heatmap_png(self, analysis: StoredAnalysis) -> bytes | None:
        """The analysis' heatmap PNG, checked against its hash; None if it has none."""
        sha256 = analysis.heatmap_sha256
        return None if sha256 is None else self.blobs.get(sha256)

    def record_feedback(
        self, analysis_id: int, user: str, outcome: str, note: str = ""
    ) -> StoredFeedback:
        """See `bcdiag.storage.analysis_store.record_feedback`."""
        return analysis_store.record_feedback(self.sessions, analysis_id, user, outcome, note)

    def latest_feedback(self, analysis_id: int, user: str) -> StoredFeedback | None:
        """The newest feedback on the user's own analysis, if any."""
        return analysis_store.latest_feedback(self.sessions, analysis_id, user)

    def confirmed_cases(self) -> list[ConfirmedCase]:
        """Scans labelled by their analyses' newest feedback, for retraining."""
        return analysis_store.confirmed_cases(self.sessions)

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
