"""Accounts, roles, hub settings and the audit command without a running hub (fast; the
live hub is in test_hub_access.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets.config import Config, PyFileConfigLoader

from bcdiag.app import current_user
from bcdiag.cli import main
from bcdiag.errors import BcdiagError
from bcdiag.platform import hub
from bcdiag.platform.audit import audit_events
from bcdiag.platform.kernels import CappedKernelManager
from bcdiag.platform.passwords import MIN_LENGTH, WeakPassword, check_password
from bcdiag.platform.users import AccountError, add_user, check_name, ensure_first_admin
from bcdiag.processes import free_port
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage, upgrade


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose hub port nobody listens on: accounts go to the hub's database."""
    return Settings(home=tmp_path / "home", port=free_port())


def hub_db(settings: Settings) -> dict[str, tuple[bool, list[str]]]:
    """{name: (admin, groups)} as JupyterHub's ORM reads them."""
    from jupyterhub import orm

    db = orm.new_session_factory(hub.hub_db_url(settings))()
    try:
        return {u.name: (u.admin, [g.name for g in u.groups]) for u in db.query(orm.User)}
    finally:
        db.close()


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("eleven char", "at least 12"),
        ("123qweasdzxc", "very common password"),
        (
            "password1234",
            "very common password",
        ),  # 12 characters, not on NativeAuthenticator's list
        ("Password1234!", "similar to a commonly used password"),
        ("qwertyuiop[]\\", "too easy to guess"),  # a keyboard walk
        ("DR-ALICE winter lamp", "contains the user name 'dr-alice'"),
        ("Welcome to Dr-Alice's desk", "contains the user name 'dr-alice'"),
    ],
)
def test_weak_passwords_are_refused_with_their_rule(password: str, problem: str) -> None:
    with pytest.raises(WeakPassword, match=re.escape(problem)):
        check_password(password, "dr-alice")


@pytest.mark.parametrize("password", ["correct horse battery", "violet tram oboe harbour"])
def test_passphrases_are_accepted(password: str) -> None:
    check_password(password, "dr-alice")


@pytest.mark.parametrize("name", ["Alice", "dr alice", "a/b", "", "-x"])
def test_user_names_are_checked(name: str) -> None:
    with pytest.raises(AccountError, match="not accepted"):
        check_name(name)


def test_add_user_without_hub_writes_account_and_group(settings: Settings) -> None:
    created = add_user(settings, "dr-alice", "clinicians", "correct horse battery")
    assert created.via == "hub database"
    add_user(settings, "boss", "admins", "correct horse battery")
    assert hub_db(settings) == {"dr-alice": (False, ["clinicians"]), "boss": (True, ["admins"])}
    with pytest.raises(AccountError, match="exists already"):
        add_user(settings, "dr-alice", "researchers", "correct horse battery")
    with pytest.raises(AccountError, match="choose one of clinicians, researchers, admins"):
        add_user(settings, "eve", "superusers", "correct horse battery")
    with pytest.raises(WeakPassword, match="very common"):
        add_user(settings, "eve", "clinicians", "password1234")
    assert "eve" not in hub_db(settings)


def test_password_is_stored_as_nativeauthenticator_checks_it(settings: Settings) -> None:
    from jupyterhub import orm
    from nativeauthenticator.orm import UserInfo

    add_user(settings, "dr-alice", "clinicians", "correct horse battery")
    db = orm.new_session_factory(hub.hub_db_url(settings))()
    try:
        info = UserInfo.find(db, "dr-alice")
        assert info.is_authorized
        assert info.is_valid_password("correct horse battery")
        assert not info.is_valid_password("correct horse batterY")
    finally:
        db.close()


def test_first_admin_is_created_once_with_a_generated_password(settings: Settings) -> None:
    first = ensure_first_admin(settings)
    assert first is not None and first.name == "admin"
    assert first.password is not None and len(first.password) >= MIN_LENGTH
    assert ensure_first_admin(settings) is None
    given = Settings(
        home=settings.home.parent / "other", port=free_port(), admin_password="violet tram oboe"
    )
    created = ensure_first_admin(given)
    assert created is not None and created.password is None  # given, so not shown


def test_clinicians_hold_only_the_app_and_no_server_scopes() -> None:
    roles = {role["name"]: role for role in hub.roles()}
    assert roles["clinician"]["scopes"] == ["access:services!service=bcdiag-app"]
    assert roles["clinician"]["groups"] == ["clinicians"]
    assert not any("server" in scope or scope == "self" for scope in roles["user"]["scopes"])
    assert "self" in roles["researcher"]["scopes"]
    assert roles["admin"]["groups"] == ["admins"]


def test_hub_config_translates_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config file, loaded as JupyterHub loads it, carries the hardening bcdiag states."""
    monkeypatch.setenv("BCDIAG_HOME", str(settings.home))
    monkeypatch.setenv("BCDIAG_PORT", "8123")
    monkeypatch.setenv("BCDIAG_LOCKOUT_SECONDS", "600")
    monkeypatch.setenv("BCDIAG_ADMIN_PASSWORD", "not for researchers")
    get_settings.cache_clear()
    try:
        loader = PyFileConfigLoader(hub.HUB_CONFIG.name, str(hub.HUB_CONFIG.parent))
        config: Config = loader.load_config()
    finally:
        get_settings.cache_clear()
    native = config.NativeAuthenticator
    assert native.enable_signup is False and native.open_signup is False
    assert native.minimum_password_length == 12 and native.check_common_password is True
    assert native.allowed_failed_logins == 5 and native.seconds_before_next_try == 600
    authenticator = config.JupyterHub.authenticator_class
    assert authenticator == "bcdiag.platform.authenticator.BcdiagAuthenticator"
    templates = Path(config.JupyterHub.template_paths[0])
    assert {"error.html", "404.html", "admin.html"} <= {p.name for p in templates.iterdir()}
    assert config.JupyterHub.bind_url == "http://127.0.0.1:8123"
    assert config.JupyterHub.cookie_max_age_days == pytest.approx(8 / 24)
    assert str(settings.home) in config.JupyterHub.db_url
    services = config.JupyterHub.services
    names = [service["name"] for service in services]
    assert names == ["bcdiag-scoring", "bcdiag-app", "mlflow", "bcdiag-admin"]
    scoring = services[0]  # managed by the hub, reached by the app only: no proxy route
    assert "url" not in scoring and scoring["command"][-1] == "bcdiag.serving.service"
    assert scoring["environment"]["RAY_AUTH_MODE"] == "token"
    assert Path(config.ConfigurableHTTPProxy.command[0]).name == "configurable-http-proxy"
    passed = [config.Spawner.environment, *(s.get("environment", {}) for s in services)]
    assert all("BCDIAG_ADMIN_PASSWORD" not in env for env in passed)  # secret stays in the hub


def test_current_user_comes_from_the_hub_header(monkeypatch: pytest.MonkeyPatch) -> None:
    header = json.dumps({"kind": "user", "name": "dr-alice", "admin": False, "groups": []})
    monkeypatch.setenv("HTTP_X_CDSDASHBOARDS_JH_USER", header)
    monkeypatch.setenv("JUPYTERHUB_USER", "someone-else")
    assert current_user() == "dr-alice"
    monkeypatch.setenv("HTTP_X_CDSDASHBOARDS_JH_USER", "{not json")
    with pytest.raises(BcdiagError, match="malformed"):
        current_user()


def test_current_user_behind_the_hub_needs_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTP_X_CDSDASHBOARDS_JH_USER", raising=False)
    monkeypatch.setenv("JUPYTERHUB_USER", "dr-local")
    get_settings.cache_clear()
    assert current_user() == "dr-local"  # `voila` by hand, or tests
    monkeypatch.setenv("BCDIAG_APP_BEHIND_HUB", "true")
    get_settings.cache_clear()
    try:
        with pytest.raises(BcdiagError, match="open it through the hub"):
            current_user()
    finally:
        get_settings.cache_clear()


def test_kernel_cap_refuses_one_more_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from tornado.web import HTTPError

    manager = CappedKernelManager(max_kernels=2)
    monkeypatch.setattr(manager, "list_kernel_ids", lambda: ["k1", "k2"])
    with pytest.raises(HTTPError) as refused:
        asyncio.run(manager.start_kernel())
    assert refused.value.status_code == 503


def test_kernel_starts_are_spaced(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = CappedKernelManager(start_spacing=0.2)
    started: list[float] = []

    async def start(self: object, **kwargs: object) -> str:
        started.append(asyncio.get_running_loop().time())
        return f"k{len(started)}"

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", start)

    async def burst() -> list[str]:
        return await asyncio.gather(*(manager.start_kernel() for _ in range(3)))

    assert sorted(asyncio.run(burst())) == ["k1", "k2", "k3"]
    assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(started))


def test_kernel_culling_spares_a_page_still_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel handed to a page that has not connected yet (its browser still loading the
    app) is not taken for a closed page's, however long it waited in the pool."""
    manager = CappedKernelManager(closed_page_timeout=30, unopened_page_timeout=300)
    waited = datetime.now(UTC) - timedelta(seconds=120)
    manager._kernels["k1"] = SimpleNamespace(last_activity=waited, execution_state="idle")
    manager._kernel_connections["k1"] = 0
    shut: list[str] = []

    async def shutdown(kernel_id: str, *args: object, **kwargs: object) -> None:
        shut.append(kernel_id)

    async def idle_rule(self: object, kernel_id: str) -> None:
        return None  # jupyter_server's own rule (cull_idle_timeout): not under test

    monkeypatch.setattr(manager, "shutdown_kernel", shutdown)
    monkeypatch.setattr(AsyncMappingKernelManager, "cull_kernel_if_idle", idle_rule)
    asyncio.run(manager.cull_kernel_if_idle("k1"))
    assert shut == [], "a page still loading lost its kernel"
    manager.notify_connect("k1")  # the page opened …
    manager.notify_disconnect("k1")  # … and closed
    asyncio.run(manager.cull_kernel_if_idle("k1"))
    assert shut == ["k1"]


def test_audit_events_newest_first_and_filtered(storage: Storage) -> None:
    for user, action in (("dr-alice", "scan.stored"), ("dr-bea", "analysis.viewed")):
        storage.record_audit(user=user, action=action, target="scan:1")
    storage.record_audit(user="dr-alice", action="analysis.viewed", target="analysis:7")
    events = audit_events(storage)
    assert (events[0].user, events[0].action) == ("dr-alice", "analysis.viewed")
    assert len(events) == 3
    assert [e.target for e in audit_events(storage, user="dr-alice", action="analysis.*")] == [
        "analysis:7"
    ]
    assert audit_events(storage, action="analysis") == []  # exact unless it ends in *
    assert len(audit_events(storage, limit=2)) == 2


def test_audit_command_prints_json_lines(bcdiag_home: Path) -> None:
    settings = get_settings()
    bcdiag_home.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    with Storage.from_settings(settings) as opened:
        opened.record_audit(user="dr-alice", action="report.downloaded", target="analysis:3")
    result = CliRunner().invoke(main, ["audit", "--json", "--user", "dr-alice"])
    assert result.exit_code == 0, result.output
    event = json.loads(result.output.splitlines()[0])
    assert event["action"] == "report.downloaded" and event["target"] == "analysis:3"
