"""The researchers' MLflow UI (/services/mlflow/) through the real hub and its OAuth proxy:
the registry is read-only there (no alias moves, no removals), everything else works,
removals with a JSON body included.

Uses `test_hub_access`'s ``platform`` (one `bcdiag run` for this module).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from test_hub_access import RESEARCHER, Platform, login, platform  # noqa: F401

from bcdiag.models.bundle import ModelBundle
from bcdiag.models.registry import CHAMPION, PREVIOUS_CHAMPION, log_bundle, set_champion

pytestmark = pytest.mark.slow
MODEL = "bcdiag-us"


@dataclass(frozen=True)
class Registry:
    """The platform's own MLflow, with `MODEL` versions 1 and 2 (champion: 2)."""

    client: MlflowClient
    experiment_id: str


@pytest.fixture(scope="module")
def registry(platform: Platform, small_bundle: ModelBundle) -> Iterator[Registry]:  # noqa: F811
    uri = f"http://127.0.0.1:{platform.env['BCDIAG_MLFLOW_PORT']}"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment("mlflow-ui-tests")
        for _ in range(2):
            with mlflow.start_run():
                log_bundle(small_bundle)
        set_champion(MODEL, "1")
        set_champion(MODEL, "2")  # version 1 keeps previous-champion
        try:
            yield Registry(MlflowClient(uri), experiment.experiment_id)
        finally:
            mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def researcher(platform: Platform) -> requests.Session:  # noqa: F811
    """A researcher signed in, through the MLflow service's OAuth once."""
    response = login(platform, RESEARCHER)
    assert response.status_code == 302, "the researcher could not sign in"
    session: requests.Session = response.session  # type: ignore[attr-defined]
    assert session.get(f"{platform.url}/services/mlflow/", timeout=120).status_code == 200
    return session


def ui(
    platform: Platform,  # noqa: F811
    session: requests.Session,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> requests.Response:
    """A request as the MLflow UI sends it (JSON body), through /services/mlflow/."""
    return session.request(method, f"{platform.url}/services/mlflow/{path}", json=body, timeout=120)


def _registry_state(client: MlflowClient) -> tuple[dict[str, str], list[str], dict[str, str]]:
    model = client.get_registered_model(MODEL)
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'"))
    return dict(model.aliases), versions, dict(client.get_model_version(MODEL, "2").tags)


ALIAS = "ajax-api/2.0/mlflow/registered-models/alias"
MOVE = {"name": MODEL, "alias": CHAMPION, "version": "1"}  # what the UI sends
VERSION_2 = {"name": MODEL, "version": "2"}
REFUSED = {
    "set alias": ("POST", ALIAS, MOVE),
    "set alias, REST API": ("POST", "api/2.0/mlflow/registered-models/alias", MOVE),
    "set alias, double slash": ("POST", "ajax-api/2.0/mlflow//registered-models/alias", MOVE),
    "set alias, escaped": ("POST", "ajax-api/2.0/mlflow/registered%2Dmodels/alias", MOVE),
    "delete alias": ("DELETE", ALIAS, {"name": MODEL, "alias": CHAMPION}),
    "delete previous": ("DELETE", ALIAS, {"name": MODEL, "alias": PREVIOUS_CHAMPION}),
    "delete version": ("DELETE", "ajax-api/2.0/mlflow/model-versions/delete", VERSION_2),
    "delete model": ("DELETE", "ajax-api/2.0/mlflow/registered-models/delete", {"name": MODEL}),
    "rename model": (
        "POST", "ajax-api/2.0/mlflow/registered-models/rename", {"name": MODEL, "new_name": "x"}
    ),
    "set version tag": (
        "POST", "ajax-api/2.0/mlflow/model-versions/set-tag",
        {**VERSION_2, "key": "bundle_sha256", "value": "0"},
    ),
    "delete version tag": (
        "DELETE", "ajax-api/2.0/mlflow/model-versions/delete-tag",
        {**VERSION_2, "key": "bundle_sha256"},
    ),
    "stage transition": (
        "POST", "ajax-api/2.0/mlflow/model-versions/transition-stage",
        {**VERSION_2, "stage": "Archived", "archive_existing_versions": False},
    ),
}  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body"), list(REFUSED.values()), ids=list(REFUSED))
def test_researcher_cannot_move_an_alias_or_remove_from_the_registry(
    platform: Platform,  # noqa: F811
    registry: Registry,
    researcher: requests.Session,
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    before = _registry_state(registry.client)
    response = ui(platform, researcher, method, path, body)
    assert response.status_code == 403, response.text[:500]
    assert response.json()["error_code"] == "PERMISSION_DENIED"
    assert "bcdiag promote" in response.json()["message"]
    assert _registry_state(registry.client) == before
    assert before[0] == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}


def test_researcher_still_reads_the_registry_and_writes_runs(
    platform: Platform,  # noqa: F811
    registry: Registry,
    researcher: requests.Session,
) -> None:
    got = ui(platform, researcher, "GET", f"ajax-api/2.0/mlflow/registered-models/get?name={MODEL}")
    assert got.status_code == 200 and got.json()["registered_model"]["name"] == MODEL
    alias = ui(platform, researcher, "GET", f"{ALIAS}?name={MODEL}&alias={CHAMPION}")
    assert alias.status_code == 200 and alias.json()["model_version"]["version"] == "2"
    created = ui(
        platform, researcher, "POST", "ajax-api/2.0/mlflow/experiments/create", {"name": "rob-1"}
    )
    assert created.status_code == 200, created.text[:500]
    experiment_id = created.json()["experiment_id"]
    run = ui(
        platform, researcher, "POST", "ajax-api/2.0/mlflow/runs/create",
        {"experiment_id": experiment_id},
    )  # fmt: skip
    assert run.status_code == 200, run.text[:500]
    run_id = run.json()["run"]["info"]["run_id"]
    tag = {"run_id": run_id, "key": "note", "value": "mine"}
    assert ui(platform, researcher, "POST", "ajax-api/2.0/mlflow/runs/set-tag", tag).ok
    assert registry.client.get_run(run_id).data.tags["note"] == "mine"
    deleted = ui(
        platform, researcher, "POST", "ajax-api/2.0/mlflow/experiments/delete",
        {"experiment_id": experiment_id},
    )  # fmt: skip
    assert deleted.status_code == 200, deleted.text[:500]
    assert registry.client.get_experiment(experiment_id).lifecycle_stage == "deleted"


def test_a_delete_with_a_json_body_passes_the_proxy(
    platform: Platform,  # noqa: F811
    registry: Registry,
    researcher: requests.Session,
) -> None:
    # Removing a tag of a researcher's logged model: the UI sends DELETE with a JSON body,
    # which the proxy used to turn into INTERNAL_ERROR ("Body must be None for method DELETE").
    model = registry.client.create_logged_model(registry.experiment_id, name="rob-model")
    registry.client.set_logged_model_tags(model.model_id, {"draft": "yes", "keep": "yes"})
    path = f"ajax-api/2.0/mlflow/logged-models/{model.model_id}/tags/draft"
    removed = ui(
        platform, researcher, "DELETE", path, {"model_id": model.model_id, "tag_key": "draft"}
    )
    assert removed.status_code == 200, removed.text[:500]
    assert registry.client.get_logged_model(model.model_id).tags == {"keep": "yes"}
