"""Failed sign-ins and lockouts, kept in the hub's database.

NativeAuthenticator counts failed logins in the hub's memory: a restart forgets them,
nothing outside the hub can read or clear them, and the login page cannot say why a
right password is refused. Here each account's count and the end of its lockout are a
row of ``bcdiag_failed_logins`` beside NativeAuthenticator's ``users_info``, which the
hub (`bcdiag.platform.authenticator`) and ``bcdiag users`` read and write alike.

Times are naive UTC, as JupyterHub stores its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jupyterhub import orm
from sqlalchemy import DateTime, Unicode
from sqlalchemy.orm import Mapped, mapped_column


class FailedLogins(orm.Base):  # type: ignore[misc,valid-type]
    """One account's failed sign-ins since its last success or unlock."""

    __tablename__ = "bcdiag_failed_logins"
    username: Mapped[str] = mapped_column(Unicode(255), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)


def now() -> datetime:
    """The current time as stored here (naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _row(db: Any, username: str) -> FailedLogins | None:
    # A query, not db.get(): the hub's long-lived session must see what `bcdiag users`
    # wrote behind its back (populate_existing refreshes a row it already holds).
    query = db.query(FailedLogins).filter(FailedLogins.username == username)
    row: FailedLogins | None = query.populate_existing().one_or_none()
    return row


def record_failure(db: Any, username: str, *, allowed: int, lock_seconds: int) -> None:
    """Count a failed sign-in; from the `allowed`-th on, each one locks the account for
    `lock_seconds` (the count goes on until a success or an unlock)."""
    row = _row(db, username)
    if row is None:
        row = FailedLogins(username=username, count=0)
        db.add(row)
    row.count += 1
    if row.count >= allowed:
        row.locked_until = now() + timedelta(seconds=lock_seconds)
    db.commit()


def locked_until(db: Any, username: str) -> datetime | None:
    """When the lockout of `username` ends (naive UTC), or None if it is not locked now."""
    row = _row(db, username)
    if row is None or row.locked_until is None or row.locked_until <= now():
        return None
    return row.locked_until


def clear(db: Any, username: str) -> bool:
    """Forget the failed sign-ins of `username`; whether it was locked."""
    row = _row(db, username)
    if row is None:
        return False
    was_locked = locked_until(db, username) is not None
    db.delete(row)
    db.commit()
    return was_locked


def describe(until: datetime, at: datetime | None = None) -> str:
    """``until 14:32 CET (in 10 minutes)``: the end of a lockout in the machine's local
    time and counted from `at` (default: now)."""
    remaining = max(1, round((until - (at or now())).total_seconds()))
    clock = until.replace(tzinfo=UTC).astimezone().strftime("%H:%M %Z")
    count, unit = (remaining, "second") if remaining < 120 else (-(-remaining // 60), "minute")
    return f"until {clock} (in {count} {unit}{'' if count == 1 else 's'})"
