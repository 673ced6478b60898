"""The schema: migrations match the models, constraints hold, history is append-only."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from bcdiag.errors import ConfigurationError, StorageError
from bcdiag.storage import Storage, upgrade
from bcdiag.storage.database import current_revision, head_revision, open_engine
from bcdiag.storage.models import (
    APPEND_ONLY_TABLES,
    Analysis,
    AuditEvent,
    Base,
    Feedback,
    Scan,
    Upload,
)


def _scan(sha: str = "a" * 64) -> Scan:
    return Scan(
        sha256=sha,
        blob_key=f"sha256/{sha[:2]}/{sha}",
        filename="x.dcm",
        format="dicom",
        modality="MG",
        rows=4,
        columns=3,
        scan_metadata={"laterality": "L"},
        uploaded_by="alice",
    )


def _history(storage: Storage) -> None:
    """One row in each table, linked together."""
    with storage.sessions() as session:
        scan = _scan()
        session.add(scan)
        session.flush()
        session.add(Upload(scan_id=scan.id, user="alice", filename="x.dcm"))
        analysis = Analysis(
            scan_id=scan.id,
            user="alice",
            model_name="mg",
            model_version="3",
            model_sha256="b" * 64,
            probability=0.8,
            threshold=0.5,
            call="suspicious",
        )
        session.add(analysis)
        session.flush()
        session.add(Feedback(analysis_id=analysis.id, user="bob", outcome="biopsy-benign"))
        session.add(AuditEvent(user="alice", action="analysis.created", target="analysis:1"))
        session.commit()


def test_upgrade_builds_the_schema_the_models_describe(database_url: str) -> None:
    assert current_revision(database_url) is None
    upgrade(database_url)
    upgrade(database_url)  # a second run is a no-op
    assert current_revision(database_url) == head_revision()
    engine = open_engine(database_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert {"scans", "uploads", "analyses", "feedback", "audit_events"} <= tables


def test_scans_stored_before_uploads_existed_reach_their_uploaders_history(
    database_url: str,
) -> None:
    upgrade(database_url, "0001")
    engine = open_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                Scan.__table__.insert().values(
                    sha256="a" * 64, blob_key="k", filename="old.png", format="png",
                    metadata={}, uploaded_by="alice",
                )
            )  # fmt: skip
        upgrade(database_url)
        with engine.connect() as connection:
            rows = connection.execute(Upload.__table__.select()).mappings().all()
    finally:
        engine.dispose()
    assert [(r["user"], r["filename"]) for r in rows] == [("alice", "old.png")]


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
@pytest.mark.parametrize("statement", ["UPDATE {table} SET user = 'eve'", "DELETE FROM {table}"])
def test_history_tables_reject_update_and_delete(
    storage: Storage, table: str, statement: str
) -> None:
    _history(storage)
    sql = statement.format(table=table).replace("user", '"user"')
    with pytest.raises(DBAPIError, match="append-only"), storage.engine.begin() as connection:
        connection.execute(text(sql))
    with storage.engine.connect() as connection:
        users = connection.execute(text(f'SELECT "user" FROM {table}')).scalars().all()
    assert users
    assert "eve" not in users


def test_scans_may_be_corrected_but_not_deleted_under_their_analyses(storage: Storage) -> None:
    _history(storage)
    with storage.engine.begin() as connection:
        connection.execute(text("UPDATE scans SET filename = 'renamed.dcm'"))
    with pytest.raises(IntegrityError), storage.engine.begin() as connection:
        connection.execute(text("DELETE FROM scans"))


def test_feedback_outcome_must_be_a_known_one(storage: Storage) -> None:
    _history(storage)
    with storage.sessions() as session:
        session.add(Feedback(analysis_id=1, user="bob", outcome="probably-fine"))
        with pytest.raises(IntegrityError, match="outcome"):
            session.commit()


def test_analysis_probability_must_be_within_0_and_1(storage: Storage) -> None:
    _history(storage)
    with storage.sessions() as session:
        row = session.scalars(select(Analysis)).one()
        session.expunge(row)
        session.add(
            Analysis(**{**_columns(row), "id": None, "probability": 1.5}),
        )
        with pytest.raises(IntegrityError):
            session.commit()


def _columns(row: Analysis) -> dict[str, object]:
    return {c.key: getattr(row, c.key) for c in inspect(Analysis).column_attrs}


def test_sha256_is_unique_and_times_come_back_in_utc(storage: Storage) -> None:
    with storage.sessions() as session:
        session.add(_scan())
        session.commit()
        assert session.scalars(select(Scan)).one().created_at.tzinfo == UTC
        session.add(_scan())
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Scan)) == 1


def test_unreachable_database_gives_a_storage_error_with_the_password_masked(
    unreachable_postgres_url: str,
) -> None:
    with pytest.raises(StorageError) as raised:
        upgrade(unreachable_postgres_url)
    assert "s3cret" not in str(raised.value)
    assert "bcdiag:***@127.0.0.1" in str(raised.value)


def test_unusable_database_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="postgresql"):
        open_engine("nosuchdb://user:pw@host/db")


def test_storage_from_settings_asks_for_migration(bcdiag_home: Path) -> None:
    bcdiag_home.mkdir()
    with pytest.raises(StorageError, match="bcdiag db upgrade"):
        Storage.from_settings()
