"""The inference service for tests that need one (imported by ``tests/conftest.py``).

- ``scoring_server``: one `bcdiag.serving.service` for the session, started exactly as
  `make run` starts it, on the session's MLflow server, with a home (database, token)
  of its own. It asks the registry on every request (``BCDIAG_CHAMPION_CHECK_S=0``), so
  a test makes a champion with ``register(bundle, scoring_server.storage)`` and the next
  request uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from mlflow_server import MlflowServer

from bcdiag.platform.services import scoring_service, scoring_token
from bcdiag.processes import free_port, start, stop
from bcdiag.serving.client import SCORING_TOKEN_ENV, ServiceClient
from bcdiag.settings import Settings
from bcdiag.storage import Storage, upgrade

START_TIMEOUT_S = 180  # a private Ray cluster and a replica loading torch, on 2 busy cores


@dataclass(frozen=True)
class ScoringServer:
    """A running inference service: where, its token, and the audit trail it checks
    champions in."""

    url: str
    token: str
    storage: Storage

    def client(self, timeout_s: float = 30) -> ServiceClient:
        return ServiceClient(self.url, self.token, timeout_s)

    def app_env(self) -> dict[str, str]:
        """What the clinician app needs to reach this service."""
        return {"BCDIAG_SCORING_URL": self.url, SCORING_TOKEN_ENV: self.token}


@pytest.fixture(scope="session")
def scoring_server(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer
) -> Iterator[ScoringServer]:
    home = tmp_path_factory.mktemp("scoring-home")
    settings = Settings(home=home, scoring_port=free_port(), mlflow_tracking_uri=mlflow_server.url)
    upgrade(settings.resolved_database_url)
    service = scoring_service(settings)
    process = start(
        replace(service, env={**service.env, "BCDIAG_CHAMPION_CHECK_S": "0"}), START_TIMEOUT_S
    )
    try:
        with Storage.from_settings(settings) as storage:
            yield ScoringServer(service.public_url, scoring_token(settings), storage)
    finally:
        stop([process])
