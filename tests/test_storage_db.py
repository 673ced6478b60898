"""The schema: migrations match the models, constraints hold, history is append-only."""

from __future__ import annotations

from datetime import UTC, date, datetime
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
    assert {
        "scans", "uploads", "analyses", "feedback", "audit_events", "cases", "exams", "exam_images"
    } <= tables  # fmt: skip


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


def test_uploads_made_before_cases_become_exams_and_keep_their_state(
    database_url: str, tmp_path: Path
) -> None:
    """Earlier uploads are filed per user under the unfiled case: DICOMs by the study in
    their metadata, the rest by modality and day; an analysis of a file its user never
    uploaded (the same bytes uploaded by another user before 0002) is filed too."""
    upgrade(database_url, "0002")
    at = [datetime(2026, 11, 30, 9 + hour, tzinfo=UTC) for hour in range(8)]
    scans = [
        ("1.dcm", "dicom", "MG", {"study_instance_uid": "1.2.5", "laterality": "L", "view": "CC"}),
        ("2.dcm", "dicom", "MG", {"study_instance_uid": "1.2.5", "laterality": "L", "view": "MLO"}),
        ("3.png", "png", "US", {}),
    ]
    uploads = [(1, "alice", at[0]), (2, "alice", at[1]), (3, "alice", at[2]), (1, "alice", at[3]),
               (3, "bob", at[4])]  # fmt: skip
    analyses = [(1, "alice", 0.3, at[5]), (1, "alice", 0.6, at[6]), (2, "alice", 0.8, at[6]),
                (2, "bob", 0.5, at[7])]  # fmt: skip
    engine = open_engine(database_url)
    try:
        with engine.begin() as connection:
            for name, kind, modality, metadata in scans:
                connection.execute(
                    Scan.__table__.insert().values(
                        sha256=name * 12, blob_key="k", filename=name, format=kind,
                        modality=modality, metadata={"format": kind, **metadata},
                        uploaded_by="alice",
                    )
                )  # fmt: skip
            for scan_id, user, when in uploads:
                connection.execute(
                    Upload.__table__.insert().values(
                        scan_id=scan_id, user=user, filename=f"{user} {when:%H}h", created_at=when
                    )
                )
            for scan_id, user, probability, when in analyses:
                connection.execute(
                    Analysis.__table__.insert().values(
                        scan_id=scan_id, user=user, created_at=when, model_name="m",
                        model_version="1", model_sha256="b" * 64, probability=probability,
                        threshold=0.5, call="x", details={},
                    )
                )  # fmt: skip
            connection.execute(
                Feedback.__table__.insert().values(
                    analysis_id=2, user="alice", outcome="biopsy-benign", note="", created_at=at[7]
                )
            )
    finally:
        engine.dispose()
    upgrade(database_url)
    with Storage.open(database_url, (tmp_path / "blobs").as_uri()) as storage:
        alice = storage.worklist("alice", sort="patient").rows
        assert [(r.patient_key, r.exam_key, r.image_count, r.state, r.score) for r in alice] == [
            ("Uploads without a case", "US 2026-11-30", 1, "not analysed", None),
            ("Uploads without a case", "1.2.5", 2, "analysed", 0.8),  # one view has an outcome
        ]
        assert alice[1].last_activity_at == at[7] and alice[1].exam_date == date(2026, 11, 30)
        images = storage.exam("alice", alice[1].id).images
        assert [(i.filename, i.laterality, i.view) for i in images] == [
            ("alice 12h", "L", "CC"),  # the newer of two uploads of the same file
            ("alice 10h", "L", "MLO"),
        ]
        assert [i.feedback is not None for i in images] == [True, False]
        bob = {r.exam_key: r for r in storage.worklist("bob").rows}
        assert {key: r.score for key, r in bob.items()} == {"US 2026-11-30": None, "1.2.5": 0.5}
        assert [i.filename for i in storage.exam("bob", bob["1.2.5"].id).images] == ["2.dcm"]
        assert [case.exam_count for case in storage.list_cases("alice")] == [2]
