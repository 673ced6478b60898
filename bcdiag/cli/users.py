"""Admin commands: ``bcdiag users`` (hub accounts; passwords on stdin) and ``bcdiag audit``
(the audit trail).

Every change to an account is audited (``user.created``, ``user.unlocked``,
``user.password-reset``, ``user.disabled``, ``user.enabled``, ``user.removed``, target
``user:NAME``) with the operating-system user who ran the command; the trail is opened
before the change, so an unreachable database changes nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from bcdiag.platform import accounts
from bcdiag.platform.audit import acting_user, audit_events
from bcdiag.platform.hub import GROUPS
from bcdiag.platform.lockout import describe
from bcdiag.platform.users import add_user
from bcdiag.settings import get_settings
from bcdiag.storage import Storage

as_json_option = click.option("--json", "as_json", is_flag=True, help="Answer in JSON.")


def _read_password() -> str:
    """At a terminal, asked twice; otherwise the first line of stdin."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\r\n")


def _audited(action: str, name: str, change: Callable[[], Any]) -> Any:
    """Run `change` and record it as `action` on account `name`; its result."""
    with Storage.from_settings() as storage:
        done = change()
        details = {k: v for k, v in done.as_json().items() if k not in ("user", "action")}
        storage.record_audit(
            user=acting_user(), action=action, target=f"user:{name}", details=details
        )
    return done


def _report(done: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(done.as_json()) if as_json else text)


@click.group()
def users() -> None:
    """Hub accounts (clinicians, researchers, admins)."""


@users.command("add")
@click.argument("name")
@click.option("--group", required=True, type=click.Choice(GROUPS), help="The account's group.")
@as_json_option
def add(name: str, group: str, as_json: bool) -> None:
    """Create the approved account NAME in --group; the password is read from stdin.

    At a terminal it is asked for twice; otherwise the first line of stdin is used.
    """
    password = _read_password()
    created = _audited(
        "user.created", name, lambda: add_user(get_settings(), name, group, password)
    )
    _report(created, as_json, f"{name}: created in {group} (via the {created.via})")


@users.command("list")
@as_json_option
def list_users(as_json: bool) -> None:
    """Every account: groups, state (active, locked, disabled) and last activity (UTC)."""
    for account in accounts.list_accounts(get_settings()):
        if as_json:
            click.echo(json.dumps(account.as_json()))
            continue
        state = account.state
        if account.locked_until is not None:
            state = f"locked {describe(account.locked_until)}"
        seen = f"{account.last_activity:%Y-%m-%d %H:%M}" if account.last_activity else "never"
        click.echo(f"{account.name:<20} {','.join(account.groups) or '-':<12} {seen:<17} {state}")


@users.command()
@click.argument("name")
@as_json_option
def unlock(name: str, as_json: bool) -> None:
    """Clear NAME's failed sign-ins, ending a lockout now."""
    done = _audited("user.unlocked", name, lambda: accounts.unlock(get_settings(), name))
    _report(done, as_json, f"{name}: {'unlocked' if done.changed else 'was not locked'}")


@users.command("reset-password")
@click.argument("name")
@as_json_option
def reset_password(name: str, as_json: bool) -> None:
    """Give NAME a new password, read from stdin as for `add`; clears its failed sign-ins."""
    password = _read_password()
    done = _audited(
        "user.password-reset",
        name,
        lambda: accounts.reset_password(get_settings(), name, password),
    )
    _report(done, as_json, f"{name}: password changed")


@users.command()
@click.argument("name")
@as_json_option
def disable(name: str, as_json: bool) -> None:
    """Refuse NAME's sign-ins; on a live hub also stop its server and end its sessions."""
    done = _audited(
        "user.disabled", name, lambda: accounts.set_enabled(get_settings(), name, False)
    )
    _report(done, as_json, f"{name}: {'disabled' if done.changed else 'was disabled already'}")


@users.command()
@click.argument("name")
@as_json_option
def enable(name: str, as_json: bool) -> None:
    """Let a disabled NAME sign in again."""
    done = _audited("user.enabled", name, lambda: accounts.set_enabled(get_settings(), name, True))
    _report(done, as_json, f"{name}: {'enabled' if done.changed else 'was enabled already'}")


@users.command()
@click.argument("name")
@click.confirmation_option(prompt="Remove this account, its server and its tokens?")
@as_json_option
def remove(name: str, as_json: bool) -> None:
    """Remove NAME: password, group memberships, server and tokens (its audit trail stays)."""
    done = _audited("user.removed", name, lambda: accounts.remove(get_settings(), name))
    _report(done, as_json, f"{name}: removed (via the {done.via})")


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
