"""Hub accounts: create an approved account in one group, and the first admin.

Managing existing accounts (list, unlock, reset a password, disable, remove) is in
`bcdiag.platform.accounts`.

The password (bcrypt, as NativeAuthenticator stores it) is always written to the
hub's database directly: NativeAuthenticator has no API for it, and it reads the
row afresh at every login. The hub's own user and group membership go through
the hub's REST API (as the ``bcdiag-admin`` service) when the hub is running,
because the running hub caches users and groups in memory and would not see rows
written behind its back; when it is not running they are written with
JupyterHub's ORM, which the hub loads at its next start.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

import bcrypt
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo  # also puts its users_info table on orm.Base

from bcdiag.errors import BcdiagError
from bcdiag.platform import hub
from bcdiag.platform.passwords import check_password
from bcdiag.platform.researchers import OsAccount, ensure_os_account
from bcdiag.settings import Settings

Via = Literal["hub API", "hub database"]

USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")


class AccountError(BcdiagError):
    """An account cannot be created as asked."""


@dataclass(frozen=True)
class Created:
    """What `add_user` did: the account and whether the live hub or its database took it."""

    name: str
    group: str
    via: Via
    os_account: OsAccount | None = None  # a researcher's own

    def as_json(self) -> dict[str, str | int]:
        """The ``--json`` answer of ``bcdiag users add``."""
        answer: dict[str, str | int] = {
            "user": self.name, "action": "created", "group": self.group, "via": self.via
        }  # fmt: skip
        return answer | (self.os_account.as_json() if self.os_account else {})


def check_name(name: str) -> None:
    """Names are lowercase letters, digits and ``. _ @ -``, at most 64 characters."""
    if not USERNAME.fullmatch(name):
        raise AccountError(
            f"user name {name!r} is not accepted: use 1-64 lowercase letters, digits, "
            "'.', '_', '@' or '-', starting with a letter or digit"
        )


def check_group(group: str) -> None:
    """The group is one of bcdiag's three."""
    if group not in hub.GROUPS:
        raise AccountError(f"group {group!r} does not exist; choose one of {', '.join(hub.GROUPS)}")


def hub_session(settings: Settings) -> Any:
    """A session on the hub's database, with the tables of every model on JupyterHub's
    ``orm.Base`` (NativeAuthenticator's; `lockout`'s once imported)."""
    hub.hub_dir(settings).mkdir(parents=True, exist_ok=True)
    return orm.new_session_factory(hub.hub_db_url(settings))()


def account_exists(settings: Settings, name: str) -> bool:
    """Whether the hub's database holds a password for `name`."""
    db = hub_session(settings)
    try:
        return UserInfo.find(db, name) is not None
    finally:
        db.close()


def _store_password(settings: Settings, name: str, password: str) -> None:
    db = hub_session(settings)
    try:
        if UserInfo.find(db, name) is not None:
            raise AccountError(f"user {name!r} exists already")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        db.add(UserInfo(username=name, password=hashed, is_authorized=True))
        db.commit()
    finally:
        db.close()


def _add_via_orm(settings: Settings, name: str, group: str) -> None:
    db = hub_session(settings)
    try:
        user = orm.User.find(db, name)
        if user is None:
            user = orm.User(name=name)
            db.add(user)
        user.admin = group == "admins"
        found = orm.Group.find(db, group)
        if found is None:
            found = orm.Group(name=group)
            db.add(found)
        if found not in user.groups:
            user.groups.append(found)
        db.commit()
    finally:
        db.close()


def hub_api(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """The status of a request to the live hub's REST API as the ``bcdiag-admin`` service."""
    request = urllib.request.Request(
        f"{hub.hub_url(settings)}/hub/api/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"token {hub.admin_api_token(settings)}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def hub_running(settings: Settings) -> bool:
    """Whether a JupyterHub answers its API on the configured port."""
    try:
        with urllib.request.urlopen(f"{hub.hub_url(settings)}/hub/api/", timeout=3) as response:
            return "version" in json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False


def _add_via_api(settings: Settings, name: str, group: str) -> None:
    quoted = urllib.parse.quote(name)
    status = hub_api(settings, "POST", f"users/{quoted}", {"admin": group == "admins"})
    if status not in (201, 409):  # 409: the hub knew the name (e.g. from an earlier login)
        raise AccountError(f"the hub refused to create user {name!r} (HTTP {status})")
    status = hub_api(settings, "POST", f"groups/{group}/users", {"users": [name]})
    if status != 200:
        raise AccountError(f"the hub refused to add {name!r} to {group} (HTTP {status})")


def add_user(settings: Settings, name: str, group: str, password: str) -> Created:
    """Create an approved account `name` in `group`, live if the hub runs; a researcher
    also gets an OS account of their own (`bcdiag.platform.researchers`)."""
    check_name(name)
    check_group(group)
    check_password(password, name)
    if account_exists(settings, name):
        raise AccountError(f"user {name!r} exists already")
    os_account = None
    if group == "researchers":
        os_account = ensure_os_account(name, settings.researcher_homes)
    _store_password(settings, name, password)
    via: Via = "hub API" if hub_running(settings) else "hub database"
    (_add_via_api if via == "hub API" else _add_via_orm)(settings, name, group)
    return Created(name, group, via, os_account)


@dataclass(frozen=True)
class FirstAdmin:
    """The admin `ensure_first_admin` created; `password` only if it was generated."""

    name: str
    password: str | None


def ensure_first_admin(settings: Settings) -> FirstAdmin | None:
    """Create the first admin unless that account exists (then None).

    The password is ``BCDIAG_ADMIN_PASSWORD``, else generated (16 characters) and
    returned so that it can be shown once.
    """
    if account_exists(settings, settings.admin_user):
        return None
    password = settings.admin_password or secrets.token_urlsafe(12)
    add_user(settings, settings.admin_user, "admins", password)
    return FirstAdmin(settings.admin_user, None if settings.admin_password else password)
