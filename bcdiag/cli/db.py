"""``bcdiag db``: migrate and inspect the configured database."""

from __future__ import annotations

import click

from bcdiag.errors import BcdiagError
from bcdiag.settings import get_settings
from bcdiag.storage.database import current_revision, head_revision, masked_url, upgrade


@click.group()
def db() -> None:
    """The relational database (BCDIAG_DATABASE_URL; default SQLite under BCDIAG_HOME)."""


@db.command("upgrade")
def upgrade_command() -> None:
    """Migrate the configured database to the newest schema."""
    settings = get_settings()
    url = settings.resolved_database_url
    try:
        if settings.database_url is None:  # the default SQLite file lives in home
            settings.home.mkdir(parents=True, exist_ok=True)
        upgrade(url)
    except (BcdiagError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{masked_url(url)} is at schema revision {head_revision()}")


@db.command("current")
def current_command() -> None:
    """Print the schema revision of the configured database."""
    url = get_settings().resolved_database_url
    try:
        found = current_revision(url)
    except BcdiagError as exc:
        raise click.ClickException(str(exc)) from exc
    head = head_revision()
    state = "up to date" if found == head else f"behind {head}: run `bcdiag db upgrade`"
    click.echo(f"{masked_url(url)}: revision {found or 'none'} ({state})")
