"""The clinician app (served by Voilà from notebooks/app.ipynb)."""

from __future__ import annotations

import getpass
import os

import ipywidgets as widgets

from bcdiag.app.clinician import ClinicianApp
from bcdiag.inference import Predictor
from bcdiag.storage import Storage


def current_user() -> str:
    """The signed-in user: the hub's user when behind JupyterHub, else the local account."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def build_app(user: str | None = None) -> widgets.Widget:
    """The app's root widget for `user` (default: `current_user`), on the configured storage."""
    app = ClinicianApp(Storage.from_settings(), Predictor(), user or current_user())
    return app.widget


__all__ = ["ClinicianApp", "build_app", "current_user"]
