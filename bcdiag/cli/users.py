"""Admin commands: ``bcdiag users add`` (hub accounts, password on stdin) and
``bcdiag audit`` (the audit trail)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from bcdiag.platform.audit import audit_events
from bcdiag.platform.hub import GROUPS
from bcdiag.platform.users import add_user
from bcdiag.settings import get_settings
from bcdiag.storage import Storage


@click.group()
def users() -> None:
    """Hub accounts (clinicians, researchers, admins)."""


@users.command("add")
@click.argument("name")
@click.option("--group", required=True, type=click.Choice(GROUPS), help="The account's group.")
def add(name: str, group: str) -> None:
    """Create the approved account NAME in --group; the password is read from stdin.

    At a terminal it is asked for twice; otherwise the first line of stdin is used.
    """
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    created = add_user(get_settings(), name, group, password)
    click.echo(f"{created.name}: created in {created.group} (via the {created.via})")


@click.command()
@click.option("--user", help="Only this user's events.")
@click.option("--action", help="Only this action; 'analysis.*' matches a prefix.")
@click.option("--since", type=click.DateTime(), help="Only events at or after (UTC).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit(
    user: str | None, action: str | None, since: datetime | None, limit: int, as_json: bool
) -> None:
    """The audit trail, newest first (for admins: it reads bcdiag's database directly)."""
    with Storage.from_settings() as storage:
        events = audit_events(
            storage,
            user=user,
            action=action,
            since=since.replace(tzinfo=UTC) if since else None,
            limit=limit,
        )
    for event in events:
        if as_json:
            click.echo(json.dumps(event.as_json(), sort_keys=True))
        else:
            stamp = event.at.strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"{stamp}  {event.user:<16} {event.action:<22} {event.target}")
