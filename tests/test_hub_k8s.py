"""hub_config/k8s/: the Kubernetes deployment parses and carries what bcdiag relies on,
and its roles and app command match the ones `bcdiag run` uses (bcdiag/platform/hub.py)."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from bcdiag.platform import hub
from bcdiag.platform.services import app_service
from bcdiag.settings import Settings

K8S = hub.REPO_ROOT / "hub_config" / "k8s"


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def deployment(name: str, file: str) -> dict[str, Any]:
    found = [d for d in documents(file) if d["kind"] == "Deployment"]
    by_name = {d["metadata"]["name"]: d for d in found}
    container: dict[str, Any] = by_name[name]["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "values.yaml").read_text())
    return loaded


def test_every_manifest_parses() -> None:
    for path in K8S.glob("*.yaml"):
        assert documents(path.name), f"{path.name} is empty"


def test_hub_uses_kubespawner_postgres_sso_and_tls(values: dict[str, Any]) -> None:
    hub_values = values["hub"]
    assert hub_values["config"]["JupyterHub"]["spawner_class"] == "kubespawner.KubeSpawner"
    assert hub_values["db"]["type"] == "postgres"
    assert hub_values["db"]["url"].startswith("postgresql")
    assert hub_values["config"]["Authenticator"]["manage_groups"] is True
    allowed = hub_values["config"]["AzureAdOAuthenticator"]["allowed_groups"]
    assert sorted(allowed) == sorted(hub.GROUPS)
    assert values["proxy"]["https"]["enabled"] is True
    assert values["cull"]["enabled"] is True
    assert "hub.default_url" in hub_values["extraConfig"]["bcdiag"]


def test_roles_are_the_ones_bcdiag_run_uses(values: dict[str, Any]) -> None:
    local = {role["name"]: role for role in hub.roles() if role["name"] != hub.ADMIN_SERVICE}
    k8s = values["hub"]["loadRoles"]
    assert set(k8s) == set(local)
    for name, role in local.items():
        assert k8s[name].get("scopes") == role.get("scopes"), name
        assert k8s[name].get("groups") == role.get("groups"), name


def test_services_are_registered_and_run(values: dict[str, Any]) -> None:
    services = values["hub"]["services"]
    assert set(services) == {hub.APP_SERVICE, hub.MLFLOW_SERVICE}
    for name in services:
        assert services[name]["oauth_redirect_uri"] == f"/services/{name}/oauth_callback"
    for name, file in (("bcdiag-app", "bcdiag-app.yaml"), ("mlflow-ui", "mlflow.yaml")):
        container = deployment(name, file)
        assert container["command"][:3] == ["python", "-m", "bcdiag.platform.proxy"]
        env = {item["name"]: item for item in container["env"]}
        token = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token["name"] == "hub" and token["key"].startswith("hub.services.")


def test_app_command_matches_the_local_one() -> None:
    """Every Voilà and kernel-manager option `bcdiag run` passes is in the k8s command."""
    local = app_service(Settings(), base_url=f"/services/{hub.APP_SERVICE}/").argv
    k8s = deployment("bcdiag-app", "bcdiag-app.yaml")["command"]
    keys = {arg.split("=", 1)[0] for arg in k8s}
    wanted = [a for a in local if a.startswith(("--Voila", "--CappedKernel", "--Mapping"))]
    # Locally Voilà's token keeps researchers' terminals off its port; in k8s the lab pods'
    # network policy does (test_researchers_pods_reach_no_clinical_data_...).
    wanted = [a for a in wanted if not a.startswith("--Voila.config_file_paths")]
    missing = [arg for arg in wanted if arg.split("=", 1)[0] not in keys]
    assert not missing, f"the k8s app lacks {missing}"
    assert "--VoilaConfiguration.http_header_envs=X-CDSDASHBOARDS-JH-USER" in k8s
    assert "--forward-user-info" in k8s


def test_researchers_pods_reach_no_clinical_data_and_mlflow_only_through_the_hub(
    values: dict[str, Any],
) -> None:
    lab = values["singleuser"]
    assert not {"BCDIAG_STORAGE_URL", "BCDIAG_DATABASE_URL"} & set(lab["extraEnv"])
    assert lab["extraEnv"]["MLFLOW_TRACKING_URI"].endswith("/services/mlflow/")
    assert "serviceAccountName" not in lab and lab["uid"] != 0
    assert "extraVolumes" not in lab and "extraVolumeMounts" not in lab
    assert lab["networkPolicy"]["egressAllowRules"]["privateIPs"] is False
    config = values["hub"]["extraConfig"]["bcdiag"]
    assert "server_token_scopes = hub.SERVER_TOKEN_SCOPES" in config
    assert "access:services!service=mlflow" in hub.SERVER_TOKEN_SCOPES
    assert "MLFLOW_TRACKING_TOKEN" in config


def test_blobs_and_artifacts_go_to_gcs(values: dict[str, Any]) -> None:
    server = " ".join(deployment("mlflow", "mlflow.yaml")["args"])
    assert "--artifacts-destination gs://" in server
    assert documents("bcdiag-app.yaml")  # storage URL from the shared `bcdiag` ConfigMap
    app_env = {e["name"]: e for e in deployment("bcdiag-app", "bcdiag-app.yaml")["env"]}
    assert app_env["BCDIAG_STORAGE_URL"]["valueFrom"]["configMapKeyRef"]["name"] == "bcdiag"


def test_readme_documents_the_move_to_kubernetes() -> None:
    notes = Path(hub.REPO_ROOT / "hub_config" / "README.md").read_text()
    for topic in ("Azure AD", "LDAP", "TLS", "PostgreSQL", "values.yaml"):
        assert topic in notes, topic


def test_the_inference_service_is_a_rayservice_of_the_same_application() -> None:
    (ray_service,) = [d for d in documents("bcdiag-scoring.yaml") if d["kind"] == "RayService"]
    (app,) = yaml.safe_load(ray_service["spec"]["serveConfigV2"])["applications"]
    module, _, name = app["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    (scorer,) = app["deployments"]
    autoscaling = scorer["autoscaling_config"]
    assert 1 <= autoscaling["min_replicas"] <= autoscaling["max_replicas"]
    cluster = ray_service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == importlib.metadata.version("ray")
    assert cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in head["env"]}
    assert env["BCDIAG_SCORING_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "bcdiag-scoring"
    assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
    app_env = {e["name"]: e for e in deployment("bcdiag-app", "bcdiag-app.yaml")["env"]}
    assert app_env["BCDIAG_SCORING_URL"]["value"].startswith("http://bcdiag-scoring-serve-svc:")
    assert app_env["BCDIAG_SCORING_TOKEN"]["valueFrom"] == env["BCDIAG_SCORING_TOKEN"]["valueFrom"]
    (policy,) = [d for d in documents("bcdiag-scoring.yaml") if d["kind"] == "NetworkPolicy"]
    callers = [rule["from"][0]["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"]]
    assert {"app.kubernetes.io/component": "app"} in callers
