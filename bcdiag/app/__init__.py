"""The clinician app (served by Voilà from notebooks/app.ipynb)."""

from __future__ import annotations

import getpass
import json
import os

import ipywidgets as widgets

from bcdiag.app.clinician import ClinicianApp
from bcdiag.errors import BcdiagError
from bcdiag.inference import Predictor
from bcdiag.settings import get_settings
from bcdiag.storage import Storage

# jhsingle-native-proxy's --forward-user-info header (a JSON user model, set by the proxy
# after hub OAuth, any client copy removed), as Voilà's http_header_envs names it.
USER_HEADER_ENV = "HTTP_X_CDSDASHBOARDS_JH_USER"


def current_user() -> str:
    """The signed-in user of this page's kernel.

    Behind the hub: the name in the user header of the request that started this kernel
    (one kernel per page, so per request). Otherwise ``JUPYTERHUB_USER``, else the OS
    account (``voila notebooks/app.ipynb`` by hand).

    Raises:
        BcdiagError: the app runs behind the hub but the request carried no user.
    """
    header = os.environ.get(USER_HEADER_ENV)
    if header:
        try:
            name = json.loads(header)["name"]
        except (ValueError, KeyError, TypeError) as error:
            raise BcdiagError("the hub's user header is malformed; sign in again") from error
        if not isinstance(name, str) or not name:
            raise BcdiagError("the hub's user header names no user; sign in again")
        return name
    if get_settings().app_behind_hub:
        raise BcdiagError("no signed-in user reached the app; open it through the hub")
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def build_app(user: str | None = None) -> widgets.Widget:
    """The app's root widget for `user` (default: `current_user`), on the configured storage."""
    app = ClinicianApp(Storage.from_settings(), Predictor(), user or current_user())
    return app.widget


__all__ = ["ClinicianApp", "build_app", "current_user"]
