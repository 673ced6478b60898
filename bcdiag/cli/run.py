"""``bcdiag run``: bring the platform up on its embedded defaults."""

from __future__ import annotations

import sys

import click

from bcdiag.services import platform_services, supervise
from bcdiag.settings import get_settings
from bcdiag.storage.database import upgrade


@click.command()
def run() -> None:
    """Migrate the database; start MLflow, JupyterLab and the clinician app (Ctrl-C stops)."""
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    sys.exit(supervise(platform_services(settings)))
