"""log_bundle, the pyfunc, load_version and promote against a real MLflow server."""

from __future__ import annotations

import io
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow_server import MlflowServer
from PIL import Image

from bcdiag.cli import main
from bcdiag.datasets import ImageSet
from bcdiag.errors import BcdiagError
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.champion_trail import recorded_champion
from bcdiag.models.pyfunc import SHA256_KEY
from bcdiag.models.registry import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    RegisteredModel,
    champion,
    load_version,
    log_bundle,
    model_name_for,
    rollback,
    set_champion,
    version_of_run,
)
from bcdiag.storage import Storage

pytestmark = pytest.mark.usefixtures("mlflow_tracking")


@pytest.fixture(scope="module")
def test_png(data_dir: Path) -> bytes:
    """The first BreastMNIST test image as the PNG bytes a user would upload."""
    with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
        pixels = npz["test_images"][0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _log(
    bundle: ModelBundle, example: bytes | None, valid_auc: float | None = None
) -> RegisteredModel:
    with mlflow.start_run():
        if valid_auc is not None:
            mlflow.log_metric("valid_auc", valid_auc)
        return log_bundle(bundle, example_png=example)


def test_log_bundle_registers_version_with_sha256(
    small_bundle: ModelBundle, test_png: bytes
) -> None:
    logged = _log(small_bundle, test_png)
    assert (logged.registered_name, logged.version) == (model_name_for("US"), "1")
    client = MlflowClient()
    version = client.get_model_version("bcdiag-us", "1")
    assert version.tags[SHA256_KEY] == logged.sha256
    assert client.get_run(logged.run_id).data.tags[SHA256_KEY] == logged.sha256
    bundle, info = load_version("bcdiag-us", 1)
    assert info.sha256 == logged.sha256
    assert bundle.operating_point == small_bundle.operating_point


def test_pyfunc_scores_files_and_rejects_per_row(
    small_bundle: ModelBundle, test_png: bytes, breastmnist: ImageSet, data_dir: Path
) -> None:
    _log(small_bundle, test_png)
    model = mlflow.pyfunc.load_model("models:/bcdiag-us/1")
    ct = (data_dir / "dicom" / "CT_small.dcm").read_bytes()
    frame = pd.DataFrame({"image": [test_png, ct], "name": ["lesion.png", "CT_small.dcm"]})
    out = model.predict(frame)
    expected = small_bundle.probabilities(breastmnist.part("test").x[:1])[0]
    threshold = small_bundle.operating_point.threshold
    assert out.loc[0, "probability_malignant"] == pytest.approx(expected, abs=1e-6)
    assert out.loc[0, "call"] == ("suspicious" if expected >= threshold else "not suspicious")
    assert pd.isna(out.loc[0, "error"])
    assert np.isnan(out.loc[1, "probability_malignant"])
    assert out.loc[1, "error"].startswith("CT_small.dcm: this DICOM file is modality CT")
    assert out["threshold"].tolist() == [threshold, threshold]


def test_tampered_bundle_is_refused(
    small_bundle: ModelBundle, test_png: bytes, mlflow_server: MlflowServer
) -> None:
    logged = _log(small_bundle, test_png)
    model_id = logged.model_uri.removeprefix("models:/")
    (stored,) = [p for p in mlflow_server.artifacts.rglob("bundle.pt") if model_id in p.parts]
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(BcdiagError, match=f"but {logged.sha256} was registered"):
        load_version("bcdiag-us", logged.version)
    with pytest.raises(Exception, match="refusing to load it"):
        mlflow.pyfunc.load_model(f"models:/bcdiag-us/{logged.version}")


def test_unknown_model_or_version_is_named(small_bundle: ModelBundle) -> None:
    with pytest.raises(BcdiagError, match="no registered model 'bcdiag-mg'; registered: none"):
        load_version("bcdiag-mg", 1)
    _log(small_bundle, None)  # the synthetic input example
    with pytest.raises(BcdiagError, match="bcdiag-us has no version 7; its versions: 1"):
        set_champion("bcdiag-us", 7)
    with pytest.raises(BcdiagError, match="modalities: US, MG"):
        model_name_for("CT")


def test_set_champion_and_rollback(small_bundle: ModelBundle) -> None:
    first, second = _log(small_bundle, None), _log(small_bundle, None)
    assert version_of_run("bcdiag-us", second.run_id) == second.version
    assert champion("bcdiag-us") is None
    assert set_champion("bcdiag-us", first.version) is None
    with pytest.raises(BcdiagError, match="bcdiag-us has no previous-champion to roll back to"):
        rollback("bcdiag-us")
    replaced = set_champion("bcdiag-us", second.version)
    assert replaced is not None and replaced.version == first.version
    assert rollback("bcdiag-us") == (first.version, second.version)
    aliases = MlflowClient().get_registered_model("bcdiag-us").aliases
    assert aliases == {CHAMPION: first.version}  # a second rollback cannot flip back
    with pytest.raises(BcdiagError, match="registered no version of bcdiag-us"):
        version_of_run("bcdiag-us", "0" * 32)


def test_the_audit_trail_records_each_champion_the_cli_makes(
    small_bundle: ModelBundle,
    audit_trail: Storage,
) -> None:
    for _ in range(3):
        _log(small_bundle, None)
    client = MlflowClient()

    def champion_now() -> str:
        return str(client.get_registered_model("bcdiag-us").aliases[CHAMPION])

    assert recorded_champion(audit_trail, "bcdiag-us") is None
    for version in ("1", "3"):
        done = CliRunner().invoke(main, ["promote", "bcdiag-us", version, "--force"])
        assert done.exit_code == 0, done.output
        assert recorded_champion(audit_trail, "bcdiag-us") == champion_now() == version
    # A move outside bcdiag (the MLflow UI, a notebook) leaves the trail as it was.
    client.set_registered_model_alias("bcdiag-us", CHAMPION, "2")
    assert recorded_champion(audit_trail, "bcdiag-us") == "3"
    client.set_registered_model_alias("bcdiag-us", CHAMPION, "3")
    assert client.get_registered_model("bcdiag-us").aliases[PREVIOUS_CHAMPION] == "1"
    done = CliRunner().invoke(main, ["rollback", "bcdiag-us"])
    assert done.exit_code == 0, done.output
    assert recorded_champion(audit_trail, "bcdiag-us") == champion_now() == "1"
    assert recorded_champion(audit_trail, "bcdiag-mg") is None  # per model
