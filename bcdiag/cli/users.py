"""``bcdiag users add``: create hub accounts from scripts (password on stdin)."""

from __future__ import annotations

import sys

import click

from bcdiag.hub import GROUPS
from bcdiag.settings import get_settings
from bcdiag.users import add_user


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
