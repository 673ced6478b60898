"""Nothing phones home: every process `make run` starts, walked down from the supervisor
(researchers' servers and kernels, the app's kernels included), carries the switches of
`bcdiag.platform.telemetry`; JupyterLab fetches no news and lists no PyPI extensions; the
Kubernetes manifests set the same; the researchers' MLflow UI opens on its classic view
without a telemetry notice, and no page asks anything of a host but the platform.

Uses `test_hub_access`'s ``platform`` (one `bcdiag run` for this module).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import pytest
import requests
import yaml
from playwright.sync_api import Page, Request
from test_app_browser import ARTIFACTS
from test_hub_access import (  # noqa: F401
    CLINICIAN,
    RESEARCHER,
    Platform,
    browser_page,
    login,
    platform,
    sign_in,
)
from test_run import tree

from bcdiag.platform import hub
from bcdiag.platform.startup import process_record
from bcdiag.platform.telemetry import JUPYTER_DIR, TELEMETRY_OFF
from bcdiag.settings import Settings

pytestmark = pytest.mark.slow
K8S = hub.REPO_ROOT / "hub_config" / "k8s"
LAB_SETTINGS = json.loads((JUPYTER_DIR / "jupyter_server_config.json").read_text())
PAGE_CONFIG = re.compile(
    r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S
)


def _signed_in(platform: Platform, name: str) -> requests.Session:  # noqa: F811
    response = login(platform, name)
    assert response.status_code == 302, f"{name} could not sign in"
    session: requests.Session = response.session  # type: ignore[attr-defined]
    return session


@pytest.fixture(scope="module")
def researcher(platform: Platform) -> requests.Session:  # noqa: F811
    """The researcher signed in, with the MLflow UI opened and their JupyterLab running a
    kernel; the clinician app opened by a clinician."""
    app = _signed_in(platform, CLINICIAN).get(f"{platform.url}/services/bcdiag-app/", timeout=300)
    assert app.status_code == 200
    session = _signed_in(platform, RESEARCHER)
    assert session.get(f"{platform.url}/services/mlflow/", timeout=300).status_code == 200
    session.get(f"{platform.url}/hub/spawn", timeout=120)
    lab = f"{platform.url}/user/{RESEARCHER}/lab"
    deadline = time.monotonic() + 180
    while not session.get(lab, timeout=60).url.endswith(f"/user/{RESEARCHER}/lab"):
        assert time.monotonic() < deadline, "the researcher's JupyterLab did not start"
        time.sleep(2)
    xsrf = {"X-XSRFToken": session.cookies.get("_xsrf", path=f"/user/{RESEARCHER}/") or ""}
    kernels = f"{platform.url}/user/{RESEARCHER}/api/kernels"
    assert session.post(kernels, headers=xsrf, timeout=120).status_code == 201
    return session


def _supervisor(platform: Platform) -> int:  # noqa: F811
    record = process_record(Settings(home=Path(platform.env["BCDIAG_HOME"])))
    pid: int = json.loads(record.read_text())[0]["pid"]
    return pid


def test_every_process_make_run_starts_has_telemetry_off(
    platform: Platform,  # noqa: F811
    researcher: requests.Session,
) -> None:
    processes = tree(_supervisor(platform))[1:]  # what the supervisor started, and below
    commands = {p.pid: " ".join(p.cmdline()) for p in processes}
    everything = "\n".join(commands.values())
    for kind in ("mlflow server", "uvicorn", "jupyterhub -f", "configurable-http-proxy", "voila"):
        assert kind in everything, everything
    assert everything.count("ipykernel_launcher") >= 2, "an app kernel and a researcher's"
    assert "jupyterhub-singleuser" in everything and "retrain --schedule" in everything
    assert "bcdiag.serving.service" in everything and "raylet" in everything
    missing = {}
    for process in processes:
        if commands[process.pid].startswith("ray::"):
            # Ray's workers and agents retitle themselves (setproctitle), which overwrites
            # /proc/<pid>/environ; they inherit the raylet's environment, checked here.
            continue
        try:
            environ = process.environ()  # /proc/<pid>/environ: what it was started with
        except psutil.NoSuchProcess:
            continue  # e.g. a kernel's helper that ended meanwhile
        wrong = [name for name, value in TELEMETRY_OFF.items() if environ.get(name) != value]
        paths = environ.get("JUPYTER_CONFIG_PATH", "").split(":")
        if str(JUPYTER_DIR) not in paths:
            wrong.append("JUPYTER_CONFIG_PATH")
        if wrong:
            missing[commands[process.pid][:120]] = wrong
    assert not missing, missing
    print(f"{len(processes)} processes checked")


def test_researchers_lab_fetches_no_news_and_lists_no_pypi_extensions(
    platform: Platform,  # noqa: F811
    researcher: requests.Session,
) -> None:
    page = researcher.get(f"{platform.url}/user/{RESEARCHER}/lab", timeout=60).text
    found = PAGE_CONFIG.search(page)
    assert found, page[:500]
    config = json.loads(found.group(1))
    assert config["news"] == {"disabled": True}
    assert config["extensionManager"]["name"] == "read-only"
    update = researcher.get(f"{platform.url}/user/{RESEARCHER}/lab/api/update", timeout=60)
    assert update.json()["notification"] is None
    plugin = "@jupyterlab/apputils-extension:notification"  # asks "get notified about news?"
    schema = researcher.get(
        f"{platform.url}/user/{RESEARCHER}/lab/api/settings/{plugin}", timeout=60
    ).json()["schema"]["properties"]  # bcdiag's overrides become the defaults
    defaults = (schema["fetchNews"]["default"], schema["checkForUpdates"]["default"])
    assert defaults == ("false", False)


def _env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container["env"]}


def test_kubernetes_sets_the_same_switches() -> None:
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    for part in ("hub", "singleuser"):
        extra = values[part]["extraEnv"]
        assert {name: extra.get(name) for name in TELEMETRY_OFF} == TELEMETRY_OFF, part
    (lab_file,) = values["singleuser"]["extraFiles"].values()
    assert lab_file["mountPath"].startswith("/etc/jupyter/jupyter_server_config.d/")
    assert lab_file["data"] == LAB_SETTINGS
    containers = []
    for name in ("bcdiag-app.yaml", "mlflow.yaml", "retrain-cronjob.yaml", "bcdiag-scoring.yaml"):
        for document in yaml.safe_load_all((K8S / name).read_text()):
            spec = (document or {}).get("spec", {})
            spec = spec.get("jobTemplate", {}).get("spec", spec)
            cluster = spec.get("rayClusterConfig", {})  # the inference service's Ray pods
            groups = [cluster.get("headGroupSpec", {}), *cluster.get("workerGroupSpecs", [])]
            for template in [spec.get("template", {}), *(g.get("template", {}) for g in groups)]:
                containers += template.get("spec", {}).get("containers", [])
    # the app, MLflow, the MLflow UI, retraining, the inference service's Ray head and workers
    assert len(containers) == 6
    for container in containers:
        env = _env_of(container)
        assert {name: env.get(name) for name in TELEMETRY_OFF} == TELEMETRY_OFF, container["name"]


@pytest.fixture
def outside_requests(browser_page: Page, platform: Platform) -> list[str]:  # noqa: F811
    """Every request the page makes to a host other than the platform's."""
    own = urlparse(platform.url).netloc
    seen: list[str] = []

    def note(request: Request) -> None:
        if urlparse(request.url).netloc not in (own, "") and request.url.startswith("http"):
            seen.append(request.url)

    browser_page.on("request", note)
    return seen


def test_mlflow_ui_opens_classic_without_telemetry_notice_and_pages_stay_home(
    platform: Platform,  # noqa: F811
    browser_page: Page,  # noqa: F811
    outside_requests: list[str],
    researcher: requests.Session,
) -> None:
    page = browser_page
    sign_in(page, platform, RESEARCHER)
    page.wait_for_url(f"**/user/{RESEARCHER}/lab**", timeout=120_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
    page.goto(f"{platform.url}/services/mlflow/", timeout=120_000)
    page.get_by_text("Welcome to MLflow").wait_for(timeout=120_000)
    stored = page.evaluate("localStorage.getItem('mlflow.workflowType_v1')")
    assert stored == '"machine_learning"', "the MLflow service's proxy runs mlflow_ui.install()"
    assert page.get_by_text("Information about UI telemetry").count() == 0
    page.wait_for_timeout(3_000)  # the assistant panel opened itself about now
    assert page.get_by_text("Ask questions about your experiments").count() == 0
    page.get_by_role("link", name="Model registry").wait_for(timeout=30_000)  # classic side bar
    assert page.get_by_role("link", name="Prompts", exact=True).count() == 0  # a GenAI one
    page.screenshot(path=str(ARTIFACTS / "mlflow-ui-start.png"))
    page.goto(f"{platform.url}/hub/logout", timeout=60_000)
    sign_in(page, platform, CLINICIAN)
    page.get_by_text(f"Signed in as {CLINICIAN}").wait_for(timeout=180_000)  # the app
    page.wait_for_timeout(3_000)  # late fetches (news, update checks) would come now
    assert not outside_requests, outside_requests
