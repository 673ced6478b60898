"""The audit trail as admins read it (`bcdiag audit`): newest first, filtered."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from bcdiag.storage import Storage
from bcdiag.storage.models import AuditEvent


def acting_user() -> str:
    """Who runs this process, for the audit trail: the hub user of a JupyterLab
    server or hub service (``JUPYTERHUB_USER``), else the OS account."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


@dataclass(frozen=True)
class AuditEntry:
    """One audit event: when, who, what, on which object, and its details."""

    at: datetime
    user: str
    action: str
    target: str
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the time in ISO 8601, UTC)."""
        return {**self.__dict__, "at": self.at.isoformat()}


def audit_events(
    storage: Storage,
    *,
    user: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest `limit` events, optionally of one `user`, one `action` (a trailing ``*``
    matches a prefix, e.g. ``analysis.*``), at or after `since`."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if user is not None:
        query = query.where(AuditEvent.user == user)
    if action is not None:
        query = query.where(
            AuditEvent.action.startswith(action[:-1], autoescape=True)
            if action.endswith("*")
            else AuditEvent.action == action
        )
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    with storage.sessions() as session:
        return [
            AuditEntry(row.at, row.user, row.action, row.target, dict(row.details or {}))
            for row in session.scalars(query)
        ]
