"""Existing hub accounts as ``bcdiag users`` manages them: list, unlock, reset a
password, disable or enable, remove.

Like `bcdiag.platform.users`, these work on the hub's database whether the hub runs
or not: the hub reads passwords, the enabled flag (NativeAuthenticator's
``is_authorized``) and lockouts afresh at every sign-in and session check
(`bcdiag.platform.authenticator`). Where the running hub holds state of its own
they also go through its REST API: a disabled account's server is stopped, a removed
account is deleted by the hub (servers, tokens, group memberships).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bcrypt
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo

from bcdiag.platform import lockout
from bcdiag.platform.passwords import check_password
from bcdiag.platform.researchers import find_os_account, remove_os_account, require_root
from bcdiag.platform.users import AccountError, Via, hub_api, hub_running, hub_session
from bcdiag.settings import Settings


@dataclass(frozen=True)
class Account:
    """One account: its groups, whether it is an admin, and its state (``active``,
    ``locked`` until `locked_until` (naive UTC), ``disabled``, or ``no password`` for a
    hub user no one can sign in as)."""

    name: str
    groups: tuple[str, ...]
    admin: bool
    state: str
    locked_until: datetime | None
    last_activity: datetime | None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601, UTC)."""
        return {
            **self.__dict__,
            "groups": list(self.groups),
            "locked_until": _iso(self.locked_until),
            "last_activity": _iso(self.last_activity),
        }


@dataclass(frozen=True)
class Change:
    """What a ``bcdiag users`` command did to `name`: `action`, whether anything
    `changed`, and whether the live hub or only its database took it."""

    name: str
    action: str
    changed: bool
    via: Via

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` answer."""
        return {"user": self.name, "action": self.action, "changed": self.changed, "via": self.via}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else f"{moment.isoformat()}+00:00"


def _state(info: UserInfo | None, until: datetime | None) -> str:
    if info is None:
        return "no password"
    if until is not None:
        return "locked"
    return "active" if info.is_authorized else "disabled"


def list_accounts(settings: Settings) -> list[Account]:
    """Every account the hub knows or holds a password for, by name."""
    db = hub_session(settings)
    try:
        users = {user.name: user for user in db.query(orm.User)}
        infos = {info.username: info for info in db.query(UserInfo)}
        accounts = []
        for name in sorted(users.keys() | infos.keys()):
            user = users.get(name)
            until = lockout.locked_until(db, name)
            accounts.append(
                Account(
                    name=name,
                    groups=tuple(sorted(g.name for g in user.groups)) if user else (),
                    admin=bool(user and user.admin),
                    state=_state(infos.get(name), until),
                    locked_until=until,
                    last_activity=user.last_activity if user else None,
                )
            )
        return accounts
    finally:
        db.close()


def _password_row(db: Any, name: str) -> UserInfo:
    info: UserInfo | None = UserInfo.find(db, name)
    if info is None:
        raise AccountError(f"there is no account {name!r}; `bcdiag users list` shows them")
    return info


def _keep_an_admin(db: Any, name: str) -> None:
    """Refuse to disable or remove the last enabled admin."""
    admins = {user.name for user in db.query(orm.User).filter(orm.User.admin.is_(True))}
    enabled = {info.username for info in db.query(UserInfo) if info.is_authorized}
    if name in admins and not (admins & enabled) - {name}:
        raise AccountError(f"{name!r} is the last enabled admin; add another admin first")


def _via(settings: Settings) -> Via:
    return "hub API" if hub_running(settings) else "hub database"


def unlock(settings: Settings, name: str) -> Change:
    """Clear `name`'s failed sign-ins; `changed` if it was locked."""
    db = hub_session(settings)
    try:
        _password_row(db, name)
        was_locked = lockout.clear(db, name)
    finally:
        db.close()
    return Change(name, "unlocked", was_locked, "hub database")


def reset_password(settings: Settings, name: str, password: str) -> Change:
    """Give `name` a new password (bcdiag's rules) and clear its failed sign-ins."""
    check_password(password, name)
    db = hub_session(settings)
    try:
        info = _password_row(db, name)
        info.password = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        db.commit()
        lockout.clear(db, name)
    finally:
        db.close()
    return Change(name, "password-reset", True, "hub database")


def set_enabled(settings: Settings, name: str, enabled: bool) -> Change:
    """Enable or disable `name`'s sign-in. Disabling on a live hub also stops the
    account's server; its sessions end at their next check (``auth_refresh_age``)."""
    db = hub_session(settings)
    try:
        info = _password_row(db, name)
        if not enabled:
            _keep_an_admin(db, name)
        changed = bool(info.is_authorized) != enabled
        info.is_authorized = enabled
        db.commit()
    finally:
        db.close()
    via = _via(settings)
    if not enabled and via == "hub API":
        status = hub_api(settings, "DELETE", f"users/{urllib.parse.quote(name)}/server")
        if status not in (202, 204, 400, 404):  # 400: no server running; 404: unknown to the hub
            raise AccountError(
                f"{name!r} is disabled, but the hub refused to stop its server (HTTP {status})"
            )
    return Change(name, "enabled" if enabled else "disabled", changed, via)


def remove(settings: Settings, name: str) -> Change:
    """Remove `name`: its password, lockout and hub user (servers, tokens, groups), and a
    researcher's OS account (its home stays, for an admin to archive)."""
    if find_os_account(name) is not None:
        require_root()  # before anything is removed
    db = hub_session(settings)
    try:
        user = orm.User.find(db, name)
        info = UserInfo.find(db, name)
        if user is None and info is None:
            _password_row(db, name)  # raises: no such account
        _keep_an_admin(db, name)
    finally:
        db.close()
    via = _via(settings)
    if via == "hub API":
        status = hub_api(settings, "DELETE", f"users/{urllib.parse.quote(name)}")
        if status not in (204, 404):  # 404: the hub never knew the name
            raise AccountError(f"the hub refused to remove {name!r} (HTTP {status})")
    db = hub_session(settings)
    try:
        for row in (orm.User.find(db, name), UserInfo.find(db, name)):
            if row is not None:
                db.delete(row)
        db.commit()
        lockout.clear(db, name)
    finally:
        db.close()
    remove_os_account(name)
    return Change(name, "removed", True, via)
