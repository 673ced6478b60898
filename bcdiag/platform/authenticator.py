"""`BcdiagAuthenticator`: NativeAuthenticator as bcdiag runs it.

What it changes, each through a hook NativeAuthenticator or JupyterHub defines:

- failed sign-ins and lockouts live in the hub's database (`bcdiag.platform.lockout`)
  instead of the hub's memory (``add_login_attempt``, ``is_blocked``,
  ``successful_login``), so that they survive a restart, ``bcdiag users unlock`` can
  clear them, and the login page can say until when an account is locked (`refusal`);
- account rows are read afresh (``get_user``): ``bcdiag users`` writes them while the
  hub runs;
- a disabled or removed account's sessions end at their next check (JupyterHub's
  ``refresh_user``, every ``auth_refresh_age`` seconds);
- accounts are created only with a password and a group (``bcdiag users add``): the
  admin panel's "Add Users" (``add_user``) is refused with that advice;
- passwords follow `bcdiag.platform.passwords` (``change_password``);
- `bcdiag.platform.hub_pages` replaces some pages (``get_handlers``).
"""

from __future__ import annotations

from typing import Any

from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo

from bcdiag.platform import hub_pages, lockout
from bcdiag.platform.passwords import password_problem


class BcdiagAuthenticator(NativeAuthenticator):  # type: ignore[misc]
    """NativeAuthenticator with persistent lockouts, stated refusals and bcdiag's rules."""

    def add_new_table(self) -> None:
        super().add_new_table()
        lockout.FailedLogins.__table__.create(self.db.bind, checkfirst=True)

    def get_user(self, username: str) -> UserInfo | None:
        name = self.normalize_username(username)
        query = self.db.query(UserInfo).filter(UserInfo.username == name)
        return query.populate_existing().one_or_none()

    def add_login_attempt(self, username: str) -> None:
        lockout.record_failure(
            self.db,
            username,
            allowed=self.allowed_failed_logins,
            lock_seconds=self.seconds_before_next_try,
        )

    def is_blocked(self, username: str) -> bool:
        return lockout.locked_until(self.db, username) is not None

    def successful_login(self, username: str) -> None:
        lockout.clear(self.db, username)

    def refusal(self, username: str, password: str) -> str | None:
        """Why a sign-in of `username` was refused when the account, not the password, is
        the reason: locked (until when, whatever the password), or disabled (only to
        whoever gives its password). None otherwise."""
        name = self.normalize_username(username)
        info = self.get_user(name)
        if info is None:
            return None
        until = lockout.locked_until(self.db, name)
        if until is not None:
            return (
                f"Too many failed sign-ins: this account is locked {lockout.describe(until)}. "
                "An administrator can unlock it sooner."
            )
        if not info.is_authorized and info.is_valid_password(password):
            return "This account is disabled. Ask an administrator to enable it."
        return None

    async def refresh_user(self, user: Any, handler: Any = None) -> bool:
        info = self.get_user(user.name)
        return info is not None and bool(info.is_authorized)

    def add_user(self, user: Any) -> Any:
        if self.get_user(user.name) is None:
            raise ValueError(
                f"{user.name} would have no password and no group, and could never sign in. "
                f"Create accounts with `bcdiag users add {user.name} --group GROUP` instead"
            )
        return super().add_user(user)

    def delete_user(self, user: Any) -> Any:
        lockout.clear(self.db, user.name)
        return super().delete_user(user)

    def change_password(self, username: str, new_password: str) -> bool | None:
        if password_problem(new_password, self.normalize_username(username)) is not None:
            return None
        changed: bool | None = super().change_password(username, new_password)
        return changed

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        replaced = dict(hub_pages.HANDLERS)
        native = [
            (path, replaced.pop(path, handler)) for path, handler in super().get_handlers(app)
        ]
        return [*native, *replaced.items()]
