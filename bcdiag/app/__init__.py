"""The clinician app (served by Voilà from notebooks/app.ipynb)."""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass

import ipywidgets as widgets

from bcdiag.app.clinician import ClinicianApp, start_warm_up
from bcdiag.errors import BcdiagError
from bcdiag.platform.audit import acting_user
from bcdiag.serving.client import ServiceClient
from bcdiag.serving.results import Scorer
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
    return acting_user()


@dataclass(frozen=True)
class Preloaded:
    """A kernel's client of the inference service and its warm-up thread (`preload`)."""

    scorer: Scorer
    warming: threading.Thread


def preload() -> Preloaded:
    """Start the scan reader and ask the inference service for its champions now: a
    preheated kernel does it before any request."""
    scorer = ServiceClient.from_settings()
    return Preloaded(scorer, start_warm_up(scorer))


def wait_for_request() -> None:
    """Voilà's `voila.utils.wait_for_request`: a preheated kernel waits here for its page
    request (and the user it carries); otherwise it returns at once.

    Importing `voila.utils` brings jupyter_server and jsonschema, whose IRI format checker
    (`rfc3987_syntax`) compiles about 35 Earley grammars at import: 1.4 s of CPU, most of a
    kernel's start, on every page (python-jsonschema/jsonschema#1428). An app kernel
    validates no IRIs, and without that module jsonschema leaves the checker out.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    from voila.utils import wait_for_request as voila_wait_for_request  # see above

    voila_wait_for_request()


def build_app(user: str | None = None, preloaded: Preloaded | None = None) -> widgets.Widget:
    """The app's root widget for `user` (default: `current_user`), on the configured storage.

    Args:
        preloaded: this kernel's `preload`; without it the app starts its own.
    """
    kernel = preloaded or preload()
    app = ClinicianApp(
        Storage.from_settings(), kernel.scorer, user or current_user(), kernel.warming,
        sign_out_url=sign_out_url(),
    )  # fmt: skip
    return app.widget


def sign_out_url() -> str | None:
    """The hub's logout page when the app runs behind the hub (None otherwise)."""
    if not get_settings().app_behind_hub:
        return None
    return f"{os.environ.get('JUPYTERHUB_BASE_URL', '/').rstrip('/')}/hub/logout"


__all__ = ["ClinicianApp", "Preloaded", "build_app", "current_user", "preload", "wait_for_request"]
