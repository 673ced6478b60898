"""Predictor and Grad-CAM against a real MLflow server and real scans.

- ``audit_trail``: bcdiag's database under a fresh ``BCDIAG_HOME``, migrated: the audit
  trail `register` records champion moves in and a default `Predictor` checks them against.
"""

from __future__ import annotations

import dataclasses
import getpass
import io
import time
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from sqlalchemy import select

from bcdiag.errors import ConfigurationError
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.champion_trail import force_champion
from bcdiag.models.registry import CHAMPION, RegisteredModel, log_bundle
from bcdiag.preprocess import prepare
from bcdiag.processes import free_port
from bcdiag.scans import Scan, read_scan
from bcdiag.serving import inference
from bcdiag.serving.heatmaps import grad_cam, overlay_png, target_layer
from bcdiag.serving.inference import CHAMPION_REFUSED, Predictor
from bcdiag.serving.results import (
    ModelRef,
    NoModelError,
    RegistryUnavailable,
    UnapprovedChampion,
)
from bcdiag.storage import Storage
from bcdiag.storage.models import AuditEvent

pytestmark = pytest.mark.usefixtures("mlflow_tracking", "audit_trail")


def breastmnist_png(data_dir: Path, index: int, split: str = "test") -> bytes:
    """A BreastMNIST image of `split` as the PNG bytes a user would upload."""
    with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
        pixels = npz[f"{split}_images"][index]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def register(bundle: ModelBundle, storage: Storage | None = None) -> RegisteredModel:
    """Log and register `bundle` and make it the champion of its modality as ``bcdiag
    promote --force`` does (no gate, audited in `storage`; default: the configured one)."""
    with mlflow.start_run():
        logged = log_bundle(bundle)
    with Storage.from_settings() if storage is None else nullcontext(storage) as trail:
        force_champion(logged.registered_name, logged.version, storage=trail, user="admin")
    return logged


@pytest.fixture(scope="module")
def us_scan(data_dir: Path) -> Scan:
    """A BreastMNIST PNG read as an ultrasound scan."""
    return read_scan(breastmnist_png(data_dir, 0), "lesion.png", modality="US")


def test_probability_equals_bundle_probabilities(small_bundle: ModelBundle, us_scan: Scan) -> None:
    logged = register(small_bundle)
    result = Predictor().predict(us_scan, "lesion.png")
    prepared = prepare(us_scan.image, modality="US", laterality=None, size=small_bundle.image_size)
    expected = float(small_bundle.probabilities(prepared[None])[0])
    assert result.probability_malignant == pytest.approx(expected, abs=1e-6)
    point = small_bundle.operating_point
    assert result.threshold == point.threshold
    assert result.call == ("suspicious" if expected >= point.threshold else "not suspicious")
    registered = mlflow.MlflowClient().get_model_version("bcdiag-us", "1").creation_timestamp
    trained_at = datetime.fromtimestamp(registered / 1000, UTC)
    assert datetime.now(UTC) - trained_at < timedelta(minutes=5)
    assert result.model == ModelRef("bcdiag-us", "1", logged.sha256, trained_at)
    assert result.heatmap is None and result.display_heatmap is None
    np.testing.assert_array_equal(result.display, us_scan.image)  # 28 px: shown as uploaded
    payload = result.as_json()
    assert payload["model"] == {
        "name": "bcdiag-us",
        "version": "1",
        "sha256": logged.sha256,
        "trained_at": trained_at.isoformat(),
    }
    assert {"file", "probability_malignant", "call", "threshold"} <= payload.keys()
    assert payload["training_prevalence"] == small_bundle.info["train_prevalence"]


def test_heatmap_is_an_image_sized_map_in_unit_range(
    small_bundle: ModelBundle, us_scan: Scan
) -> None:
    register(small_bundle)
    prediction = Predictor().predict(us_scan, "lesion.png", heatmap=True)
    heat = prediction.heatmap
    assert heat is not None
    assert prediction.display_heatmap is not None
    assert prediction.display_heatmap.shape == prediction.display.shape == us_scan.image.shape
    assert heat.shape == (small_bundle.image_size,) * 2
    assert heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat.std() > 0.01


def test_heatmap_moves_with_the_image(small_bundle: ModelBundle, us_scan: Scan) -> None:
    # With flip TTA the map is mirror-equivariant by construction: a map that did not
    # follow the image (transposed, fixed pattern, wrong axis) fails this.
    nets = small_bundle.networks()
    prepared = prepare(us_scan.image, modality="US", laterality=None, size=small_bundle.image_size)
    heat = grad_cam(small_bundle, nets, prepared)
    mirrored = grad_cam(small_bundle, nets, np.ascontiguousarray(prepared[:, ::-1]))
    np.testing.assert_allclose(mirrored, heat[:, ::-1], atol=1e-5)
    assert np.abs(heat - heat[:, ::-1]).max() > 0.05  # the map itself is not symmetric
    assert np.abs(heat - heat.T).max() > 0.05


def test_grad_cam_without_flip_and_overlay_png(small_bundle: ModelBundle, us_scan: Scan) -> None:
    bundle = dataclasses.replace(small_bundle, tta_flip=False)
    prepared = prepare(us_scan.image, modality="US", laterality=None, size=bundle.image_size)
    heat = grad_cam(bundle, bundle.networks(), prepared)
    png = Image.open(io.BytesIO(overlay_png(prepared, heat)))
    assert png.mode == "RGB"
    assert png.size[0] >= 256 and png.size[0] % bundle.image_size == 0


def test_target_layer_names_the_supported_architectures() -> None:
    from torch import nn

    with pytest.raises(ConfigurationError, match=r"no Grad-CAM target layer is known for Linear"):
        target_layer(nn.Linear(2, 2))


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every model version the Predictor downloads and loads, as ``name/version``."""
    calls: list[str] = []
    real_load = inference.load_version

    def counting_load(name: str, version: str | int) -> tuple[ModelBundle, object]:
        calls.append(f"{name}/{version}")
        return real_load(name, version)

    monkeypatch.setattr(inference, "load_version", counting_load)
    return calls


def test_new_champion_is_used_without_a_new_predictor(
    small_bundle: ModelBundle, us_scan: Scan, loads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    real_lookup = inference._registry_champion

    def counting_lookup(uri: str, name: str) -> object:
        lookups.append(name)
        return real_lookup(uri, name)

    monkeypatch.setattr(inference, "_registry_champion", counting_lookup)
    register(small_bundle)
    now = [1000.0]
    predictor = Predictor(champion_check_s=30, clock=lambda: now[0])
    assert predictor.predict(us_scan, "a.png").model.version == "1"
    register(small_bundle)
    now[0] += 29  # within champion_check_s: no registry request, the old champion
    assert predictor.predict(us_scan, "b.png").model.version == "1"
    assert lookups == ["bcdiag-us"]
    now[0] += 2  # the next analysis after champion_check_s asks again
    assert predictor.predict(us_scan, "c.png").model.version == "2"
    assert lookups == ["bcdiag-us", "bcdiag-us"]
    assert loads == ["bcdiag-us/1", "bcdiag-us/2"]


def test_a_first_champion_is_used_at_the_next_upload(
    small_bundle: ModelBundle, us_scan: Scan
) -> None:
    predictor = Predictor(champion_check_s=30, clock=lambda: 1000.0)  # the clock stands still
    with pytest.raises(NoModelError, match="no champion model for US yet"):
        predictor.predict(us_scan, "a.png")
    register(small_bundle)  # promoted a moment later: "none" was not kept for 30 s
    assert predictor.predict(us_scan, "b.png").model.version == "1"


def test_warm_up_loads_the_champions_once(
    small_bundle: ModelBundle, us_scan: Scan, loads: list[str]
) -> None:
    logged = register(small_bundle)
    predictor = Predictor()
    (ready,) = predictor.warm_up()  # MG has no champion: left out
    assert (ready.name, ready.version, ready.sha256) == ("bcdiag-us", "1", logged.sha256)
    assert predictor.predict(us_scan, "a.png", heatmap=True).model == ready
    assert loads == ["bcdiag-us/1"]


def test_unreachable_registry_fails_fast_with_a_message(us_scan: Scan) -> None:
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    predictor = Predictor(registry_timeout_s=1)
    for _ in range(2):  # the second call waits on the same stuck request, not a new one
        began = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="did not answer within 1 s"):
            predictor.predict(us_scan, "lesion.png")
        assert time.monotonic() - began < 3


def test_mammogram_without_champion_has_no_model(small_bundle: ModelBundle, data_dir: Path) -> None:
    register(small_bundle)  # a US champion exists; MG has none
    path = data_dir / "dicom" / "derived" / "cbisddsm_Mass-Test_P_00173_LEFT_CC_benign_quarter.dcm"
    scan = read_scan(path.read_bytes(), path.name)
    assert scan.metadata.modality == "MG"
    with pytest.raises(NoModelError, match="no champion model for MG yet: train and promote"):
        Predictor().predict(scan, path.name)


def test_registered_model_without_champion_has_no_model(
    small_bundle: ModelBundle, us_scan: Scan
) -> None:
    with mlflow.start_run():
        log_bundle(small_bundle)  # registered, never promoted
    with pytest.raises(NoModelError, match="no champion model for US yet"):
        Predictor().predict(us_scan, "lesion.png")


def test_scan_of_unknown_modality_has_no_model(data_dir: Path) -> None:
    scan = read_scan(breastmnist_png(data_dir, 1), "unknown.png")
    with pytest.raises(NoModelError, match="unknown modality"):
        Predictor().predict(scan, "unknown.png")


def _refusals(storage: Storage) -> list[tuple[str, str, dict[str, object]]]:
    with storage.sessions() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == CHAMPION_REFUSED))
        return [(event.user, event.target, dict(event.details)) for event in events]


def test_a_champion_moved_outside_bcdiag_is_refused_and_audited(
    small_bundle: ModelBundle, us_scan: Scan, storage: Storage
) -> None:
    register(small_bundle, storage)  # version 1: champion through bcdiag (audited)
    with mlflow.start_run() as run:
        log_bundle(small_bundle)  # version 2: never gated
    client = MlflowClient()
    # What the MLflow UI (or a notebook on the tracking server) does: move the alias, and
    # forge the gate's tag on the version's run for good measure.
    client.set_registered_model_alias("bcdiag-us", CHAMPION, "2")
    client.set_tag(run.info.run_id, "gate_decision", "promoted")
    predictor = Predictor(storage=storage)
    for _ in range(2):  # refused at every upload, each refusal audited
        with pytest.raises(UnapprovedChampion) as refused:
            predictor.predict(us_scan, "lesion.png")
    assert str(refused.value) == (
        "the current model has not passed the quality gate; results are withheld; "
        "contact your administrator"
    )
    assert predictor.warm_up() == []  # a kernel's warm-up loads nothing either
    assert _refusals(storage) == 3 * [
        (
            getpass.getuser(),
            "model:bcdiag-us/2",
            {"recorded_champion": "1", "tracking_uri": mlflow.get_tracking_uri()},
        )
    ]
    force_champion("bcdiag-us", "2", storage=storage, user="admin")  # an audited decision
    assert predictor.predict(us_scan, "lesion.png").model.version == "2"


def test_a_champion_bcdiag_never_moved_is_refused(
    small_bundle: ModelBundle, us_scan: Scan, audit_trail: Storage
) -> None:
    with mlflow.start_run():
        log_bundle(small_bundle)
    MlflowClient().set_registered_model_alias("bcdiag-us", CHAMPION, "1")
    with pytest.raises(UnapprovedChampion):
        Predictor().predict(us_scan, "lesion.png")  # the configured audit trail by default
    assert [target for _, target, _ in _refusals(audit_trail)] == ["model:bcdiag-us/1"]


def test_a_model_registered_anew_is_not_mistaken_for_its_old_version_1(
    small_bundle: ModelBundle, us_scan: Scan
) -> None:
    """Deleting a registered model and registering another restarts its numbering at 1;
    the Predictor must load the new version 1, not keep serving the old one."""
    first = register(small_bundle)
    predictor = Predictor(champion_check_s=0)
    before = predictor.predict(us_scan, "a.png")
    MlflowClient().delete_registered_model(first.registered_name)
    second = register(replace(small_bundle, temperature=small_bundle.temperature * 3))
    after = predictor.predict(us_scan, "a.png")
    assert before.model.version == after.model.version == "1"
    assert (before.model.sha256, after.model.sha256) == (first.sha256, second.sha256)
    assert after.probability_malignant != before.probability_malignant
