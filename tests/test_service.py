"""The inference service as `make run` starts it: a real Ray Serve application on a free
port, scoring through the same path as in-process scoring, behind its token."""

from __future__ import annotations

import concurrent.futures
import io
import os
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import psutil
import pytest
import requests
from mlflow_server import MlflowServer
from PIL import Image
from scoring_server import ScoringServer
from test_inference import breastmnist_png

from bcdiag.app.analyses import (
    SERVICE_UNAVAILABLE,
    AnalysisAccepted,
    AnalysisRejected,
    analyse_stored,
    analyse_upload,
)
from bcdiag.errors import ScanRejected
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.champion_trail import force_champion
from bcdiag.models.registry import RegisteredModel, log_bundle
from bcdiag.platform.services import scoring_service, scoring_token
from bcdiag.processes import free_port, start, stop
from bcdiag.serving.client import ServiceClient
from bcdiag.serving.inference import Predictor
from bcdiag.serving.local import LocalScorer
from bcdiag.serving.results import ModelRef, NoModelError, ServiceUnavailable, Upload
from bcdiag.serving.service import TEMP_PREFIX
from bcdiag.settings import Settings
from bcdiag.storage import Storage, upgrade

pytestmark = pytest.mark.usefixtures("mlflow_tracking")


def champion(bundle: ModelBundle, storage: Storage) -> str:
    """Register `bundle` and make it its modality's champion; its version."""
    return promoted(bundle, storage).version


def promoted(bundle: ModelBundle, storage: Storage) -> RegisteredModel:
    with mlflow.start_run():
        logged = log_bundle(bundle)
    force_champion(logged.registered_name, logged.version, storage=storage, user="admin")
    return logged


def test_scores_an_upload_as_scoring_in_this_process_does(
    scoring_server: ScoringServer, small_bundle: ModelBundle, data_dir: Path
) -> None:
    version = champion(small_bundle, scoring_server.storage)
    upload = Upload(breastmnist_png(data_dir, 3), "lesion.png", "US")
    served = scoring_server.client().score(upload)
    local = LocalScorer(Predictor(storage=scoring_server.storage)).score(upload)
    assert served.finding == local.finding
    assert (served.finding.model.name, served.finding.model.version) == ("bcdiag-us", version)
    assert served.image_png == local.image_png and served.heatmap_png == local.heatmap_png
    with Image.open(io.BytesIO(served.heatmap_png)) as picture:
        assert picture.format == "PNG" and min(picture.size) >= 256
    assert [m.version for m in _held(scoring_server, "bcdiag-us")] == [version]


def _held(scoring_server: ScoringServer, name: str) -> list[ModelRef]:
    """The models named `name` the service holds (the session's service may still hold a
    champion an earlier test made for another modality, until its next refresh)."""
    return [model for model in scoring_server.client().ready() if model.name == name]


def test_requests_at_once_are_batched_and_each_gets_its_own_result(
    scoring_server: ScoringServer, small_bundle: ModelBundle, data_dir: Path
) -> None:
    champion(small_bundle, scoring_server.storage)
    uploads = [Upload(breastmnist_png(data_dir, i), f"us_{i}.png", "US") for i in range(8)]
    alone = [scoring_server.client().score(upload).finding for upload in uploads]
    with concurrent.futures.ThreadPoolExecutor(len(uploads)) as pool:
        together = [result.finding for result in pool.map(scoring_server.client().score, uploads)]
    assert [f.file for f in together] == [u.filename for u in uploads]
    assert [f.probability_malignant for f in together] == pytest.approx(
        [f.probability_malignant for f in alone], abs=1e-5
    )
    assert len({f.probability_malignant for f in together}) > 1


def test_a_newly_promoted_champion_is_used_without_a_restart(
    scoring_server: ScoringServer, small_bundle: ModelBundle, data_dir: Path
) -> None:
    champion(small_bundle, scoring_server.storage)
    upload = Upload(breastmnist_png(data_dir, 5), "lesion.png", "US")
    first = scoring_server.client().score(upload).finding
    changed = replace(small_bundle, temperature=small_bundle.temperature * 3)
    version = champion(changed, scoring_server.storage)
    second = scoring_server.client().score(upload).finding
    assert second.model.version == version != first.model.version
    assert second.probability_malignant != first.probability_malignant
    # the replaced champion is no longer held
    assert [m.version for m in _held(scoring_server, "bcdiag-us")] == [version]


def test_an_unusable_file_comes_back_as_its_message(scoring_server: ScoringServer) -> None:
    with pytest.raises(ScanRejected) as rejected:
        scoring_server.client().score(Upload(b"not an image at all", "notes.png", "US"))
    assert "notes.png" in rejected.value.message


def test_a_modality_without_champion_is_said_so(
    scoring_server: ScoringServer, data_dir: Path
) -> None:
    mammogram = _mammogram_png(data_dir)
    with pytest.raises(NoModelError, match="no champion model for MG"):
        scoring_server.client().score(Upload(mammogram, "mammogram.png", "MG"))


def test_scoring_asks_for_the_token(scoring_server: ScoringServer, data_dir: Path) -> None:
    body = breastmnist_png(data_dir, 0)
    params = {"filename": "x.png", "modality": "US"}
    anonymous = requests.post(f"{scoring_server.url}/score", params=params, data=body, timeout=30)
    wrong = requests.post(
        f"{scoring_server.url}/score",
        params=params,
        data=body,
        headers={"Authorization": "Bearer guess"},
        timeout=30,
    )
    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert requests.get(f"{scoring_server.url}/health", timeout=30).json()["status"] == "ok"


def test_a_service_that_does_not_answer_is_reported_within_the_timeout() -> None:
    client = ServiceClient(f"http://127.0.0.1:{free_port()}", "token", timeout_s=2)
    with pytest.raises(ServiceUnavailable, match="the analysis service is unavailable"):
        client.score(Upload(b"x", "x.png", "US"))
    assert client.ready() == []


def test_an_app_without_the_token_says_so() -> None:
    client = ServiceClient(f"http://127.0.0.1:{free_port()}", None, timeout_s=2)
    with pytest.raises(ServiceUnavailable, match=r"without its token \(BCDIAG_SCORING_TOKEN\)"):
        client.score(Upload(b"x", "x.png", "US"))


def _mammogram_png(data_dir: Path) -> bytes:
    """A real rsna640 mammogram (JPEG) as an uploaded PNG."""
    with Image.open(data_dir / "rsna640" / "images" / "5_640805896.jpg") as image:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_hung_then_killed_service_is_a_message_and_its_return_serves_again(
    tmp_path: Path, mlflow_server: MlflowServer, small_bundle: ModelBundle, data_dir: Path
) -> None:
    """Hung (SIGSTOP), then killed: each upload ends as the message within the client's
    timeout, with the scan stored; started again, the same client analyses that scan."""
    settings = Settings(
        home=tmp_path / "home", scoring_port=free_port(), mlflow_tracking_uri=mlflow_server.url
    )
    settings.home.mkdir()
    upgrade(settings.resolved_database_url)
    storage = Storage.from_settings(settings)  # the app's, and the trail champions are checked in
    champion(small_bundle, storage)
    running = scoring_service(settings)
    client = ServiceClient(running.public_url, scoring_token(settings), timeout_s=3)
    png = breastmnist_png(data_dir, 2)
    process = start(running, 180)
    try:
        tree = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(True))]
        for pid in tree:  # hung: every process of the service stops answering
            os.kill(pid, signal.SIGSTOP)
        began = time.monotonic()
        hung = analyse_upload(
            storage, client, png, "hung.png", user="alice", modality="US", case_name="Case A"
        )
        waited = time.monotonic() - began
        for pid in tree:
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
        process.wait(10)
        killed = analyse_upload(
            storage, client, png, "down.png", user="alice", modality="US", case_name="Case A"
        )
    finally:
        stop([process])
    for outcome in (hung, killed):
        assert isinstance(outcome, AnalysisRejected) and outcome.code == SERVICE_UNAVAILABLE
        assert outcome.scan is not None  # stored: listed in the history, to analyse later
        assert "the analysis service is unavailable" in outcome.message
        assert "The scan is stored" in outcome.message
    assert waited < 3 * 2 + 2  # connect, then answer: each within the client's timeout
    assert "did not answer within 3 s" in hung.message
    ray_dirs = set(Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"))
    process = start(running, 180)  # the service is back: the same client scores again
    try:
        assert hung.scan is not None
        again = analyse_stored(storage, client, hung.scan, "hung.png", user="alice")
        tree = psutil.Process(process.pid).children(recursive=True)
    finally:
        stop([process])
    storage.close()
    assert isinstance(again, AnalysisAccepted)
    assert again.analysis.scan_id == hung.scan.id
    # SIGTERM stops it in order: its own exit, its Ray processes gone, its session files removed
    assert process.returncode == 0
    assert not [child for child in tree if child.is_running()]
    assert set(Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*")) <= ray_dirs


def test_a_promoted_champion_is_loaded_before_any_upload_asks_for_it(
    scoring_server: ScoringServer, small_bundle: ModelBundle
) -> None:
    changed = replace(small_bundle, temperature=small_bundle.temperature * 2)
    sha256 = promoted(changed, scoring_server.storage).sha256
    deadline = time.monotonic() + 60
    held = lambda: [m.sha256 for m in _held(scoring_server, "bcdiag-us")]  # noqa: E731
    while held() != [sha256] and time.monotonic() < deadline:
        time.sleep(1)
    assert held() == [sha256]  # no /score was sent
