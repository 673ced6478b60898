"""Researchers' own OS accounts, homes and environment, without a running hub (the live
server, terminal and kernel are in test_hub_access.py). These tests run as root, as CI does:
they create and delete real OS accounts (homes under the test's folder)."""

from __future__ import annotations

import json
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from bcdiag.platform import accounts
from bcdiag.platform.researchers import (
    ResearcherAccountError,
    copy_notebooks,
    find_os_account,
    os_name,
    researcher_environment,
)
from bcdiag.platform.users import account_exists, add_user
from bcdiag.processes import free_port
from bcdiag.settings import Settings

PASSWORD = "violet tram oboe harbour"


@pytest.fixture
def settings(bcdiag_home: Path) -> Settings:
    """Settings whose hub port nobody listens on; researchers' homes in the test's folder."""
    return Settings(port=free_port())


def test_a_researcher_gets_an_os_account_of_their_own_and_loses_it_on_removal(
    settings: Settings,
) -> None:
    created = add_user(settings, "rob.smith", "researchers", PASSWORD)
    account = created.os_account
    assert account is not None and account.name == "bcdiag-rob_smith"
    entry = pwd.getpwnam(account.name)
    assert entry.pw_uid == account.uid != 0 and entry.pw_gecos == "bcdiag researcher rob.smith"
    assert account.home.parent == settings.researcher_homes
    assert stat.S_IMODE(account.home.stat().st_mode) == 0o700
    assert json.loads(json.dumps(created.as_json()))["os_user"] == "bcdiag-rob_smith"
    accounts.remove(settings, "rob.smith")
    assert find_os_account("rob.smith") is None
    assert account.home.is_dir(), "the home stays for an admin to archive"


def test_other_groups_get_no_os_account(settings: Settings) -> None:
    assert add_user(settings, "dr-alice", "clinicians", PASSWORD).os_account is None
    assert find_os_account("dr-alice") is None


def test_an_os_account_bcdiag_did_not_make_is_never_taken(settings: Settings) -> None:
    subprocess.run(["useradd", "--no-create-home", "bcdiag-eve"], check=True)
    try:
        with pytest.raises(ResearcherAccountError, match="not 'eve''s researcher account"):
            add_user(settings, "eve", "researchers", PASSWORD)
        assert not account_exists(settings, "eve"), "nothing half-made"
    finally:
        subprocess.run(["userdel", "bcdiag-eve"], check=True)


def test_os_names_keep_clear_of_system_accounts_and_fit_useradd() -> None:
    assert os_name("postgres") == "bcdiag-postgres"
    long_a, long_b = "a" * 63 + "1", "a" * 63 + "2"
    assert len(os_name(long_a)) == 32 and os_name(long_a) != os_name(long_b)


def test_notebooks_are_copied_without_the_app_checkpoints_or_other_files(tmp_path: Path) -> None:
    source, home = tmp_path / "notebooks", tmp_path / "home"
    (source / ".ipynb_checkpoints").mkdir(parents=True)
    for name in ("train.ipynb", "evaluate.ipynb", "app.ipynb", "conftest.py"):
        (source / name).write_text(name)
    (source / ".ipynb_checkpoints" / "train-checkpoint.ipynb").write_text("old")
    (home / "notebooks").mkdir(parents=True)
    (home / "notebooks" / "train.ipynb").write_text("the researcher's edit")
    assert copy_notebooks(source, home) == ["evaluate.ipynb"]
    assert sorted(p.name for p in (home / "notebooks").iterdir()) == [
        "evaluate.ipynb",
        "train.ipynb",
    ]
    assert (home / "notebooks" / "train.ipynb").read_text() == "the researcher's edit"


def test_a_researchers_server_gets_no_connection_setting_or_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "BCDIAG_DATABASE_URL": "postgresql://bcdiag:secret@db/bcdiag",
        "BCDIAG_STORAGE_URL": "gs://scans/blobs",
        "BCDIAG_ADMIN_PASSWORD": "secret",
        "BCDIAG_HOME": "/srv/bcdiag",
        "BCDIAG_DATA_DIR": "/data",
    }.items():
        monkeypatch.setenv(name, value)
    env = researcher_environment()
    assert env["BCDIAG_DATA_DIR"] == "/data" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert not [key for key in env if "secret" in env[key] or "/srv/" in env[key]]
    assert {"BCDIAG_DATABASE_URL", "BCDIAG_STORAGE_URL", "BCDIAG_HOME"}.isdisjoint(env)
