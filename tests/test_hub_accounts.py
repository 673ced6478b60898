"""`bcdiag users` list / unlock / reset-password / disable / enable / remove on a stopped
hub, against the hub's own authenticator (`BcdiagAuthenticator` on the same SQLite
database, as the hub runs it). The live hub and the browser: test_hub_access.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from jupyterhub import orm

from bcdiag.cli import main
from bcdiag.platform import hub
from bcdiag.platform.audit import audit_events
from bcdiag.platform.authenticator import BcdiagAuthenticator
from bcdiag.platform.users import add_user
from bcdiag.processes import free_port
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage, upgrade

PASSWORD = "violet tram oboe harbour"


@pytest.fixture
def settings(bcdiag_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A migrated BCDIAG_HOME whose hub port nobody listens on, with one account per group."""
    monkeypatch.setenv("BCDIAG_PORT", str(free_port()))
    get_settings.cache_clear()
    settings = get_settings()
    bcdiag_home.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    for name, group in (("dr-alice", "clinicians"), ("rob", "researchers"), ("boss", "admins")):
        add_user(settings, name, group, PASSWORD)
    return settings


@pytest.fixture
def authenticator(settings: Settings) -> Iterator[BcdiagAuthenticator]:
    """The hub's authenticator on the hub's database, configured as the hub: 5 failures
    lock for 10 minutes."""
    db = orm.new_session_factory(hub.hub_db_url(settings))()
    yield BcdiagAuthenticator(
        _deprecated_db_session=db,
        allowed_failed_logins=5,
        seconds_before_next_try=600,
        allow_all=True,  # as the hub config: accounts are the allow list
    )
    db.close()


def sign_in(authenticator: BcdiagAuthenticator, name: str, password: str) -> Any:
    """What the login form's POST gets from the authenticator (a name, or None)."""
    data = {"username": name, "password": password}
    return asyncio.run(authenticator.get_authenticated_user(None, data))


def bcdiag(*args: str, stdin: str | None = None) -> Result:
    """``bcdiag ARGS`` in this process, `stdin` as its standard input."""
    return CliRunner().invoke(main, list(args), input=stdin)


def answer(*args: str, stdin: str | None = None) -> Any:
    """The JSON answer of a ``bcdiag users … --json`` that must succeed."""
    result = bcdiag("users", *args, "--json", stdin=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def listed(name: str) -> dict[str, Any] | None:
    """`name`'s line of ``bcdiag users list --json``."""
    result = bcdiag("users", "list", "--json")
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.output.splitlines()]
    return next((account for account in found if account["name"] == name), None)


def audited(name: str) -> list[str]:
    """The audit trail's actions on account `name`, oldest first."""
    with Storage.from_settings() as storage:
        events = audit_events(storage, action="user.*")
    return [event.action for event in reversed(events) if event.target == f"user:{name}"]


def lock(authenticator: BcdiagAuthenticator, name: str) -> None:
    for _ in range(5):
        assert sign_in(authenticator, name, "wrong password!!") is None


@pytest.mark.usefixtures("settings")
def test_five_failures_lock_the_account_until_unlock(
    authenticator: BcdiagAuthenticator, settings: Settings
) -> None:
    lock(authenticator, "dr-alice")
    assert sign_in(authenticator, "dr-alice", PASSWORD) is None, "locked: even the password"
    said = authenticator.refusal("dr-alice", PASSWORD)
    assert said is not None and "locked until" in said and "(in 10 minutes)" in said
    db = orm.new_session_factory(hub.hub_db_url(settings))()
    try:  # a restarted hub still knows
        restarted = BcdiagAuthenticator(_deprecated_db_session=db, allowed_failed_logins=5)
        assert restarted.is_blocked("dr-alice")
    finally:
        db.close()
    assert sign_in(authenticator, "rob", PASSWORD) is not None, "others are not locked"
    shown = listed("dr-alice")
    assert shown is not None and shown["state"] == "locked" and shown["locked_until"]
    text = bcdiag("users", "list").output
    assert "locked until" in next(line for line in text.splitlines() if "dr-alice" in line)

    assert answer("unlock", "dr-alice") == {
        "user": "dr-alice", "action": "unlocked", "changed": True, "via": "hub database"
    }  # fmt: skip
    assert sign_in(authenticator, "dr-alice", PASSWORD)["name"] == "dr-alice"
    assert answer("unlock", "dr-alice")["changed"] is False
    assert audited("dr-alice") == ["user.unlocked", "user.unlocked"]
    missing = bcdiag("users", "unlock", "nobody")
    assert missing.exit_code != 0 and "there is no account 'nobody'" in missing.output


def test_reset_password_follows_the_rules_and_ends_a_lockout(
    authenticator: BcdiagAuthenticator,
) -> None:
    lock(authenticator, "rob")
    for weak, rule in (("password1234", "very common"), ("rob tram oboe 12", "user name 'rob'")):
        refused = bcdiag("users", "reset-password", "rob", stdin=weak + "\n")
        assert refused.exit_code != 0 and rule in refused.output
    new = "quiet lantern meadow 7"
    assert answer("reset-password", "rob", stdin=new + "\n")["action"] == "password-reset"
    assert sign_in(authenticator, "rob", PASSWORD) is None
    assert sign_in(authenticator, "rob", new)["name"] == "rob"
    assert audited("rob") == ["user.password-reset"]


def test_disable_refuses_sign_in_and_sessions_until_enable(
    authenticator: BcdiagAuthenticator,
) -> None:
    alice = orm.User(name="dr-alice")  # refresh_user reads only the name
    assert answer("disable", "dr-alice") == {
        "user": "dr-alice", "action": "disabled", "changed": True, "via": "hub database"
    }  # fmt: skip
    assert sign_in(authenticator, "dr-alice", PASSWORD) is None
    assert "disabled" in (authenticator.refusal("dr-alice", PASSWORD) or "")
    assert authenticator.refusal("dr-alice", "wrong password!!") is None, "only to its owner"
    assert asyncio.run(authenticator.refresh_user(alice)) is False, "sessions end"
    assert listed("dr-alice")["state"] == "disabled"  # type: ignore[index]
    assert answer("enable", "dr-alice")["changed"] is True
    assert sign_in(authenticator, "dr-alice", PASSWORD)["name"] == "dr-alice"
    assert asyncio.run(authenticator.refresh_user(alice)) is True
    assert audited("dr-alice") == ["user.disabled", "user.enabled"]


@pytest.mark.usefixtures("settings")
def test_the_last_enabled_admin_stays() -> None:
    for command in (["disable", "boss"], ["remove", "boss", "--yes"]):
        refused = bcdiag("users", *command)
        assert refused.exit_code != 0 and "last enabled admin" in refused.output
    add = bcdiag("users", "add", "boss2", "--group", "admins", stdin="quiet lantern meadow 7\n")
    assert add.exit_code == 0, add.output
    assert answer("disable", "boss")["changed"] is True


def test_remove_deletes_password_hub_user_and_membership(
    authenticator: BcdiagAuthenticator, settings: Settings
) -> None:
    lock(authenticator, "rob")
    assert answer("remove", "rob", "--yes")["action"] == "removed"
    assert listed("rob") is None
    db = orm.new_session_factory(hub.hub_db_url(settings))()
    try:
        assert orm.User.find(db, "rob") is None
        assert [u.name for u in orm.Group.find(db, "researchers").users] == []
    finally:
        db.close()
    assert sign_in(authenticator, "rob", PASSWORD) is None
    assert audited("rob") == ["user.removed"]
    again = bcdiag("users", "remove", "rob", "--yes")
    assert again.exit_code != 0 and "there is no account 'rob'" in again.output


def test_accounts_without_password_are_refused_and_listed(
    authenticator: BcdiagAuthenticator, settings: Settings
) -> None:
    """The admin panel's "Add Users" creates hub users through `add_user`: refused."""
    with pytest.raises(ValueError, match="bcdiag users add ghost --group GROUP"):
        authenticator.add_user(orm.User(name="ghost"))
    authenticator.add_user(orm.User(name="dr-alice"))  # `bcdiag users add` on a live hub
    db = orm.new_session_factory(hub.hub_db_url(settings))()
    try:  # one made before bcdiag refused them
        db.add(orm.User(name="ghost"))
        db.commit()
    finally:
        db.close()
    assert listed("ghost") == {
        "name": "ghost", "groups": [], "admin": False, "state": "no password",
        "locked_until": None, "last_activity": None,
    }  # fmt: skip
    assert answer("remove", "ghost", "--yes")["changed"] is True


def test_change_password_pages_follow_the_rules(authenticator: BcdiagAuthenticator) -> None:
    for weak in ("password1234", "Dr-Alice tram oboe harbour", "short"):
        assert authenticator.change_password("dr-alice", weak) is None
    assert authenticator.change_password("dr-alice", "quiet lantern meadow 7") is True
    assert sign_in(authenticator, "dr-alice", "quiet lantern meadow 7")["name"] == "dr-alice"


@pytest.mark.usefixtures("settings")
def test_users_add_answers_in_json_and_is_audited() -> None:
    created = answer("add", "eve", "--group", "clinicians", stdin="quiet lantern meadow 7\n")
    assert created == {
        "user": "eve", "action": "created", "group": "clinicians", "via": "hub database"
    }  # fmt: skip
    assert listed("eve")["groups"] == ["clinicians"]  # type: ignore[index]
    assert audited("eve") == ["user.created"]
