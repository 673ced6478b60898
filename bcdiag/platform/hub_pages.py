"""The hub pages bcdiag changes, registered by `BcdiagAuthenticator.get_handlers`.

JupyterHub registers an authenticator's handlers before its own pages, so these take
precedence over the pages of the same path (as NativeAuthenticator's ``/login`` does):

- ``/login`` says why a sign-in was refused when the reason is the account, not the
  password: locked (until when) or disabled; and a form JupyterHub refuses (invalid or
  expired) shows the form again with that message instead of a blank page.
- ``/change-password`` and ``/change-password/NAME`` apply bcdiag's password rules and
  say which one a refused password breaks.
- ``/home``, ``/spawn`` and ``/token`` send a user who may have no server of their own
  (clinicians; admins for ``/home`` and ``/spawn``) to where they work, instead of
  offering a server they are refused.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.handlers import pages
from jupyterhub.handlers.login import LoginHandler as HubLoginHandler
from nativeauthenticator import handlers as native
from tornado import web

from bcdiag.platform import hub
from bcdiag.platform.passwords import password_problem


class LoginHandler(native.LoginHandler):  # type: ignore[misc]
    """NativeAuthenticator's login page; a refusal names a locked or disabled account."""

    def _render(
        self, login_error: str | None = None, username: str | None = None, **error: Any
    ) -> Any:
        if error:
            # JupyterHub shows an error of the form itself (e.g. an expired form) as the login
            # page, rendered synchronously with the error's fields; NativeAuthenticator's
            # `_render` takes neither (a blank 403), so JupyterHub's own login page answers.
            return HubLoginHandler._render(self, login_error, username, **error)
        if login_error and username:
            password = self.get_body_argument("password", default="", strip=False)
            login_error = self.authenticator.refusal(username, password) or login_error
        return super()._render(login_error=login_error, username=username)


async def refused_new_password(handler: Any, template: str, user_name: str) -> bool:
    """Render `template` with the rule the posted new password breaks; whether it broke one."""
    new_password = handler.get_body_argument("new_password", strip=False)
    problem = password_problem(new_password, user_name)
    if problem is None:
        return False
    html = await handler.render_template(
        template,
        user_name=user_name,
        result_message=f"The password was not changed: {problem}.",
        alert="alert-danger",
    )
    handler.finish(html)
    return True


class ChangePasswordHandler(native.ChangePasswordHandler):  # type: ignore[misc]
    """A user changes their own password, under bcdiag's rules."""

    @web.authenticated  # type: ignore[misc,untyped-decorator]
    async def post(self) -> None:
        if not await refused_new_password(self, "change-password.html", self.current_user.name):
            await super().post()


class ChangePasswordAdminHandler(native.ChangePasswordAdminHandler):  # type: ignore[misc]
    """An admin sets someone's password, under bcdiag's rules."""

    @native.admin_users_scope  # type: ignore[misc,untyped-decorator]
    async def post(self, user_name: str) -> None:
        if not await refused_new_password(self, "change-password-admin.html", user_name):
            await super().post(user_name)


class ServerlessToWorkplace:
    """For a signed-in user who may not use this page, GET redirects to their default URL
    (`hub.default_url`) instead: by default those who hold no ``servers`` scope at all
    (clinicians); with `own_server`, everyone who is not a researcher (admins too: only
    researchers get a server of their own, `hub.servers_for_researchers_only`)."""

    own_server = False

    def _elsewhere(self, handler: Any) -> bool:
        if self.own_server:
            return "researchers" not in {group.name for group in handler.current_user.groups}
        return "servers" not in handler.parsed_scopes

    async def get(self, *args: Any, **kwargs: Any) -> None:
        handler: Any = self
        if handler.current_user is not None and self._elsewhere(handler):
            workplace = hub.default_url(handler)
            if workplace:
                handler.redirect(workplace)
                return
        pending = super().get(*args, **kwargs)  # type: ignore[misc]
        if pending is not None:  # None: tornado's `authenticated` sent them to the login page
            await pending


class HomeHandler(ServerlessToWorkplace, pages.HomeHandler):  # type: ignore[misc]
    """``/hub/home``: "Start My Server" for those who may have one."""

    own_server = True


class SpawnHandler(ServerlessToWorkplace, pages.SpawnHandler):  # type: ignore[misc]
    """``/hub/spawn``: one's own server (an admin starts a researcher's at /spawn/NAME)."""

    own_server = True


class TokenPageHandler(ServerlessToWorkplace, pages.TokenPageHandler):  # type: ignore[misc]
    """``/hub/token``: API tokens, which only researchers and admins may create."""


HANDLERS: list[tuple[str, type]] = [
    (r"/login", LoginHandler),
    (r"/change-password", ChangePasswordHandler),
    (r"/change-password/([^/]+)", ChangePasswordAdminHandler),
    (r"/home", HomeHandler),
    (r"/spawn", SpawnHandler),
    (r"/token", TokenPageHandler),
]
