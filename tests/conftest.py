"""Fixtures shared by the whole suite.

- ``data_dir``: the shared real data (``BCDIAG_DATA_DIR``; `make test` points it
  at ``../shared/data``). Tests that need real scans fail, never skip, without it.
- ``bcdiag_home``: an empty ``BCDIAG_HOME`` per test, with the settings cache cleared.
- ``postgres_admin_url``: URL of the real PostgreSQL server from
  ``BCDIAG_TEST_POSTGRES_URL`` (set by ``.ci/with-postgres``); fails without it.
- ``database_url``: a fresh, empty database per test, parametrised over
  ``sqlite`` (a file under tmp_path) and ``postgres`` (a new database on the
  server, dropped afterwards; marked ``postgres``).
- ``migrated_url``: ``database_url`` migrated to the newest schema.
- ``storage``: a `Storage` on ``migrated_url`` with a ``file://`` blob store under tmp_path.
- ``unreachable_postgres_url``: a PostgreSQL URL, password ``s3cret``, on a port
  nothing listens on.
- ``gcs_emulator``: a real ``gcp-storage-emulator`` process on a free 127.0.0.1
  port for the session, with ``STORAGE_EMULATOR_HOST`` pointing at it.
- ``gcs_url``: ``gs://<new bucket>/blobs`` on that emulator, one bucket per test.
- ``scoring_server``: the inference service for the session (tests/scoring_server.py).
- ``train_seed``: the recipe seed a training test trains with; the test runs once per
  seed given by ``--train-seed`` (comma-separated, default ``0``), e.g.
  ``pytest tests/test_retrain.py --train-seed 0,1,2,3,4`` checks that it passes for
  any seed, not only for the one CI uses.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from bcdiag.processes import free_port
from bcdiag.settings import get_settings
from bcdiag.storage import Storage, upgrade


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--train-seed",
        default="0",
        help="Comma-separated recipe seeds that tests using the train_seed fixture run with.",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "train_seed" in metafunc.fixturenames:
        option = str(metafunc.config.getoption("--train-seed"))
        seeds = [int(seed) for seed in option.split(",")]
        metafunc.parametrize("train_seed", seeds, ids=[f"seed{seed}" for seed in seeds])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real shared data (breastmnist/, mias/, dicom/)."""
    value = os.environ.get("BCDIAG_DATA_DIR")
    if not value or not Path(value, "dicom").is_dir():
        pytest.fail("BCDIAG_DATA_DIR must point at the shared data folder (see README)")
    return Path(value)


@pytest.fixture
def bcdiag_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh BCDIAG_HOME with default (SQLite + folder) storage; researchers' OS
    accounts made meanwhile get homes under the test's folder and are removed after it."""
    home = tmp_path / "home"
    homes = tmp_path / "homes"
    monkeypatch.setenv("BCDIAG_HOME", str(home))
    monkeypatch.setenv("BCDIAG_RESEARCHER_HOMES", str(homes))
    monkeypatch.delenv("BCDIAG_DATABASE_URL", raising=False)
    monkeypatch.delenv("BCDIAG_STORAGE_URL", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
    for entry in pwd.getpwall():
        if entry.pw_dir.startswith(f"{homes}/"):
            subprocess.run(["userdel", entry.pw_name], check=True)


@pytest.fixture
def audit_trail(bcdiag_home: Path) -> Iterator[Storage]:
    """The configured storage (SQLite under a fresh BCDIAG_HOME), migrated."""
    bcdiag_home.mkdir(parents=True)
    upgrade(get_settings().resolved_database_url)
    with Storage.from_settings() as storage:
        yield storage


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The test PostgreSQL server's URL; run the suite under `.ci/with-postgres`."""
    value = os.environ.get("BCDIAG_TEST_POSTGRES_URL")
    if not value:
        pytest.fail("BCDIAG_TEST_POSTGRES_URL is unset: run tests under .ci/with-postgres")
    return value


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    name = f"bcdiag_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A fresh database at the newest schema revision."""
    upgrade(database_url)
    return database_url


@pytest.fixture
def storage(migrated_url: str, tmp_path: Path) -> Iterator[Storage]:
    """Storage on a migrated database and a blob folder under tmp_path."""
    with Storage.open(migrated_url, (tmp_path / "blobs").as_uri()) as opened:
        yield opened


@pytest.fixture
def unreachable_postgres_url() -> str:
    """A database URL with a password that no server answers."""
    return f"postgresql+psycopg2://bcdiag:s3cret@127.0.0.1:{free_port()}/bcdiag"


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running gcp-storage-emulator; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port), "--in-memory"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(base_url, process, log)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STORAGE_EMULATOR_HOST", base_url)
            yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_until_answering(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gcp-storage-emulator exited: {log.read_text()}")
        try:
            urllib.request.urlopen(f"{base_url}/storage/v1/b", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP error status is an answer
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    pytest.fail(f"gcp-storage-emulator did not answer within 30 s: {log.read_text()}")


@pytest.fixture
def gcs_url(gcs_emulator: str) -> str:
    """A new bucket on the emulator, as a blob store URL with a prefix."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    bucket = f"bcdiag-{uuid.uuid4().hex[:12]}"
    client = gcs.Client(project="bcdiag-test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    client.create_bucket(bucket)
    return f"gs://{bucket}/blobs"


# MLflow fixtures (documented in tests/mlflow_server.py)
from mlflow_server import (  # noqa: E402, F401
    breastmnist,
    mlflow_server,
    mlflow_tracking,
    small_bundle,
)

# The inference service (documented in tests/scoring_server.py)
from scoring_server import scoring_server  # noqa: E402, F401
