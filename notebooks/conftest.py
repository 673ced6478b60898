"""nbval runs every notebook here in `make test`.

The notebooks log to MLflow, so a real MLflow server (the one `make run` starts,
on a free port with a throwaway store) runs for them. Notebooks run before the
rest of the suite, training before evaluation, so the evaluation notebook has a
registered model to score; each notebook's kernel gets this server's URL even if
a test moved MLflow's tracking URI (``mlflow.set_tracking_uri`` writes the
environment). The app notebook gets a migrated throwaway database.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from bcdiag.platform.services import mlflow_service
from bcdiag.processes import free_port, start, stop
from bcdiag.settings import Settings
from bcdiag.storage import upgrade

_RUN_FIRST = ("explore_scans.ipynb", "train.ipynb", "evaluate.ipynb", "app.ipynb")
_server: list[subprocess.Popen[bytes]] = []
_kernel_env: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    home = Path(tempfile.mkdtemp(prefix="bcdiag-nbval-"))
    service = mlflow_service(Settings(home=home, mlflow_port=free_port()))
    _server.append(start(service))
    upgrade(f"sqlite:///{home / 'bcdiag.sqlite'}")  # the app notebook's database
    _kernel_env.update(MLFLOW_TRACKING_URI=service.public_url, BCDIAG_HOME=str(home))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if Path(str(item.fspath)).suffix == ".ipynb":
        os.environ.update(_kernel_env)  # the kernel, started next, inherits it


def pytest_unconfigure(config: pytest.Config) -> None:
    stop(_server)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> int:
        name = Path(str(item.fspath)).name
        return _RUN_FIRST.index(name) if name in _RUN_FIRST else len(_RUN_FIRST)

    items.sort(key=order)
