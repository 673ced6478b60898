"""``bcdiag db`` as users run it: a real subprocess on the configured database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bcdiag.storage.database import current_revision, head_revision


def _bcdiag(
    *args: str, home: Path, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCDIAG_")}
    env["BCDIAG_HOME"] = str(home)
    if database_url:
        env["BCDIAG_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "bcdiag", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_upgrade_creates_the_default_sqlite_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    before = _bcdiag("db", "current", home=home)
    upgraded = _bcdiag("db", "upgrade", home=home)
    assert upgraded.returncode == 0, upgraded.stderr
    assert current_revision(f"sqlite:///{home / 'bcdiag.sqlite'}") == head_revision()
    after = _bcdiag("db", "current", home=home)
    assert before.returncode != 0  # no home folder yet: nothing to read
    assert f"revision {head_revision()} (up to date)" in after.stdout


def test_db_upgrade_migrates_the_configured_database(database_url: str, tmp_path: Path) -> None:
    assert (
        "run `bcdiag db upgrade`"
        in _bcdiag("db", "current", home=tmp_path, database_url=database_url).stdout
    )
    upgraded = _bcdiag("db", "upgrade", home=tmp_path, database_url=database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert current_revision(database_url) == head_revision()


@pytest.mark.parametrize("command", ["upgrade", "current"])
def test_unreachable_database_is_one_clear_line_without_the_password(
    unreachable_postgres_url: str, tmp_path: Path, command: str
) -> None:
    failed = _bcdiag("db", command, home=tmp_path, database_url=unreachable_postgres_url)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "s3cret" not in failed.stderr + failed.stdout
    assert "bcdiag:***@127.0.0.1" in failed.stderr
