"""Researchers' own operating-system accounts, their homes and what their servers see.

A researcher's JupyterLab server, with its kernels and terminals, runs as an OS account
of that researcher's own (``bcdiag-<name>``), which ``bcdiag users add --group
researchers`` creates (as root, with ``useradd``); `bcdiag.platform.researcher_spawner`
starts it there. The home (mode 0700) holds a copy of bcdiag's notebooks, never the
source tree. What a researcher cannot reach, and why:

- bcdiag's state folder (``BCDIAG_HOME``: hub cookie secret and API tokens, the clinical
  database, the blob store, MLflow's stores) is mode 0700, owned by the account that runs
  ``bcdiag run`` (`private_state`);
- the server's environment carries none of bcdiag's connection settings or secrets
  (`RESEARCHER_SETTINGS` lists what it does carry), and ``BCDIAG_HOME`` there is a folder
  in the researcher's home;
- MLflow is reached through the hub's MLflow service with the server's own hub token, so
  the registry guard (`bcdiag.platform.registry_guard`) applies to kernels as to the UI.

Scans reach a researcher only as a de-identified export an admin grants (``bcdiag export
--deidentify --grant NAME``), written into that home and owned by that account.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcdiag.errors import BcdiagError
from bcdiag.platform.telemetry import telemetry_off_env

OS_PREFIX = "bcdiag-"
MAX_OS_NAME = 32  # useradd's limit
COMMENT = "bcdiag researcher {name}"
NOTEBOOKS = "notebooks"
EXPORTS = "exports"
# The clinician app is served by Voilà; in a researcher's kernel it would only open an
# empty store of their own.
NOT_FOR_RESEARCHERS = ("app.ipynb",)
# ``BCDIAG_*`` settings a researcher's server passes on: what notebooks need to read the
# public data sets and train; never a database, blob store, hub or MLflow address.
RESEARCHER_SETTINGS = (
    "data_dir", "torch_threads", "dask_scheduler", "max_pixels", "max_decoded_bytes",
    "min_side_px", "validate_timeout_s", "validate_memory_bytes", "registry_timeout_s",
    "retrain_recipe", "locked_test_us", "locked_test_mg",
)  # fmt: skip


def researcher_environment() -> dict[str, str]:
    """The environment the hub gives every researcher's server: the `RESEARCHER_SETTINGS`
    this process has, and the telemetry switches (the spawner adds the per-user rest)."""
    names = [f"BCDIAG_{name.upper()}" for name in RESEARCHER_SETTINGS]
    return {**{n: os.environ[n] for n in names if n in os.environ}, **telemetry_off_env()}


class ResearcherAccountError(BcdiagError):
    """A researcher's OS account cannot be created, found or removed."""


ROOT_NEEDED = (
    "researchers get an operating-system account of their own, which only root can "
    "create and switch to: run `bcdiag run` and `bcdiag users` as root (or deploy with "
    "hub_config/k8s/)"
)


@dataclass(frozen=True)
class OsAccount:
    """A researcher's OS account: its name, ids and home."""

    name: str
    uid: int
    gid: int
    home: Path

    def as_json(self) -> dict[str, str | int]:
        """What ``bcdiag users add --json`` says about it."""
        return {"os_user": self.name, "uid": self.uid, "home": str(self.home)}


def os_name(name: str) -> str:
    """The OS account name of hub user `name`: ``bcdiag-`` and the name, characters
    useradd may refuse as ``_``, shortened with a hash suffix beyond 32 characters.

    The prefix keeps researchers apart from system accounts (``postgres``, ``root``).
    """
    plain = OS_PREFIX + re.sub(r"[^a-z0-9_-]", "_", name)
    if len(plain) <= MAX_OS_NAME:
        return plain
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{plain[: MAX_OS_NAME - 9]}-{digest}"


def find_os_account(name: str) -> OsAccount | None:
    """Hub user `name`'s OS account, None if there is none; an error if the OS name is
    taken by an account bcdiag did not create for `name`."""
    try:
        entry = pwd.getpwnam(os_name(name))
    except KeyError:
        return None
    if entry.pw_gecos != COMMENT.format(name=name):
        raise ResearcherAccountError(
            f"the OS account {entry.pw_name} exists but is not {name!r}'s researcher account "
            f"({entry.pw_gecos or 'no comment'}); choose another user name"
        )
    return OsAccount(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def require_root() -> None:
    """An error unless this process can create and switch to OS accounts."""
    if os.geteuid() != 0:
        raise ResearcherAccountError(ROOT_NEEDED)


def ensure_os_account(name: str, homes: Path) -> OsAccount:
    """Hub user `name`'s OS account, created (home under `homes`, mode 0700, own group,
    no password: one signs in only through the hub) if it does not exist."""
    found = find_os_account(name)
    if found is not None:
        return found
    require_root()
    homes.mkdir(parents=True, exist_ok=True)
    account = os_name(name)
    home = homes / account
    _run_tool(
        "useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash",
        "--user-group", "--comment", COMMENT.format(name=name), account,
    )  # fmt: skip
    home.chmod(0o700)
    created = find_os_account(name)
    assert created is not None  # useradd succeeded
    return created


def remove_os_account(name: str) -> OsAccount | None:
    """Delete `name`'s OS account if it has one (its home stays, for an admin to archive)."""
    found = find_os_account(name)
    if found is None:
        return None
    require_root()
    # Whatever the researcher left running (the hub has stopped their server) would
    # make userdel refuse.
    subprocess.run(["pkill", "--signal", "KILL", "--uid", str(found.uid)], timeout=30, check=False)
    _run_tool("userdel", found.name)
    return found


def _run_tool(*argv: str, timeout_s: float = 60, **popen: Any) -> None:
    """Run `argv`; an error naming it, with the end of its stderr, if it fails."""
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout_s, **popen)
    except FileNotFoundError as exc:
        raise ResearcherAccountError(f"{argv[0]} is not installed: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        raise ResearcherAccountError(f"{argv[0]} failed: {exc.stderr.strip()[-500:]}") from exc


def as_account(account: OsAccount) -> Callable[[], None]:
    """A ``preexec_fn`` that turns a child process into `account` (groups, gid, uid) in
    its home, for JupyterHub's spawner, which takes one."""
    groups = os.getgrouplist(account.name, account.gid)

    def switch() -> None:
        os.setgroups(groups)
        os.setgid(account.gid)
        os.setuid(account.uid)
        os.chdir(account.home)

    return switch


def copy_notebooks(source: Path, home: Path) -> list[str]:
    """Copy each of bcdiag's notebooks in `source` that ``home/notebooks`` lacks (a
    researcher's edits are never overwritten; checkpoints and the app are left out).

    Run as the researcher (`copy_notebooks_as`).
    """
    target = home / NOTEBOOKS
    target.mkdir(mode=0o700, exist_ok=True)
    copied = []
    for notebook in sorted(source.glob("*.ipynb")):
        if notebook.name in NOT_FOR_RESEARCHERS or (target / notebook.name).exists():
            continue
        shutil.copyfile(notebook, target / notebook.name)
        copied.append(notebook.name)
    return copied


def run_as(account: OsAccount, *argv: str) -> None:
    """Run `argv` as `account` in its home (nothing there is written by root, so a link
    the researcher placed cannot redirect a write); an error with its stderr if it fails."""
    _run_tool(
        *argv,
        timeout_s=120,
        user=account.uid,
        group=account.gid,
        extra_groups=os.getgrouplist(account.name, account.gid),
        env={"PATH": os.defpath, "HOME": str(account.home)},
        cwd=account.home,
    )


def copy_notebooks_as(account: OsAccount, source: Path) -> None:
    """`copy_notebooks` into `account`'s home, run as `account`."""
    code = "import sys, pathlib; from bcdiag.platform.researchers import copy_notebooks; "
    code += "copy_notebooks(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))"
    run_as(account, python_for_researchers(), "-c", code, str(source), str(account.home))


def move_as(account: OsAccount, source: Path, target: Path) -> None:
    """Move `source` (owned by `account` already) to `target` in its home, as `account`."""
    run_as(account, "mkdir", "-p", "--", str(target.parent))
    run_as(account, "mv", "--no-clobber", "--no-target-directory", "--", str(source), str(target))
    if source.exists():
        raise ResearcherAccountError(f"{target} exists already: choose another name")


def python_for_researchers() -> str:
    """This interpreter, once every folder above it (the venv's link, the real binary and
    the standard library) is open to other accounts; else an error naming the folder that
    keeps researchers out."""
    executable = Path(sys.executable)
    for start in (executable, executable.resolve(), Path(sys.base_prefix) / "lib"):
        for folder in start.parents:
            if not folder.stat().st_mode & 0o001:
                raise ResearcherAccountError(
                    f"researchers' servers cannot run {executable}: {folder} is closed to "
                    "other accounts (install bcdiag with a Python every account can run, "
                    "or chmod o+x that folder)"
                )
    return str(executable)


def private_state(home: Path) -> None:
    """Close bcdiag's state folder to every other account (mode 0700)."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)


def grant_folder(account: OsAccount, folder: Path) -> None:
    """Hand `folder` (a fresh export made by root) and everything in it to `account`."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, account.uid, account.gid, follow_symlinks=False)
