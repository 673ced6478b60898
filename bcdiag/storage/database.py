"""Engines, sessions and migrations for the one relational database bcdiag uses.

SQLite (the embedded default) gets foreign keys, WAL and a busy timeout on every
connection; PostgreSQL is used as is. Database failures reach callers as
`StorageError` messages that name the database with its password masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bcdiag.errors import ConfigurationError, StorageError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def masked_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to print and log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def open_engine(url: str) -> Engine:
    """An engine for ``url``; raises `ConfigurationError` if the URL is unusable."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ConfigurationError(
            f"database URL {masked_url(url)} is not usable: {exc}; expected e.g. "
            "sqlite:////path/bcdiag.sqlite or postgresql+psycopg2://user@host/db"
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose loaded objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def session_engine(session: Session) -> Engine:
    """The engine a session is bound to (what `database_errors` names in its message)."""
    return session.get_bind().engine


@contextmanager
def database_errors(engine: Engine, doing: str) -> Iterator[None]:
    """Turn SQLAlchemy errors raised inside the block into a `StorageError`."""
    try:
        yield
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        where = engine.url.render_as_string(hide_password=True)
        raise StorageError(f"database {where}: {doing} failed: {reason}") from exc


def _alembic_config(connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return head


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest)."""
    engine = open_engine(url)
    try:
        with database_errors(engine, "migrating"), engine.begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The migration the database at ``url`` is at; None for an empty database."""
    engine = open_engine(url)
    try:
        with database_errors(engine, "reading the schema revision"), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def require_current_schema(engine: Engine) -> None:
    """Raise `StorageError` unless the database is migrated to the newest revision."""
    with database_errors(engine, "reading the schema revision"), engine.connect() as conn:
        found = MigrationContext.configure(conn).get_current_revision()
    if found != head_revision():
        where = engine.url.render_as_string(hide_password=True)
        raise StorageError(
            f"database {where} is at schema revision {found or 'none'}, "
            f"this code needs {head_revision()}: run `bcdiag db upgrade`"
        )
