"""One scoring path: the pyfunc, the Predictor (app, ``bcdiag predict``) and the gate
all score through `ModelBundle.score`, against a real MLflow server and real scans."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from test_inference import register

from bcdiag.errors import ScanRejected
from bcdiag.lifecycle import gate
from bcdiag.models.bundle import ModelBundle, Scored
from bcdiag.models.calls import NOT_SUSPICIOUS, SUSPICIOUS
from bcdiag.models.champion_trail import force_champion
from bcdiag.models.registry import log_bundle
from bcdiag.scans import read_scan
from bcdiag.serving.batch import score_files
from bcdiag.serving.inference import Predictor
from bcdiag.settings import get_settings
from bcdiag.storage import Storage

pytestmark = pytest.mark.usefixtures("mlflow_tracking", "audit_trail")

MAMMOGRAM = "dicom/derived/cbisddsm_Mass-Test_P_00173_LEFT_CC_benign_quarter.dcm"


def test_pyfunc_predictor_batch_and_gate_give_the_same_score(
    small_bundle: ModelBundle, data_dir: Path, tmp_path: Path
) -> None:
    register(small_bundle)
    with (data_dir / "busi256" / "labels.csv").open() as labels:  # the locked set's first case
        first = next(row["file"] for row in csv.DictReader(labels) if row["split"] == "test")
    png = (data_dir / "busi256" / first).read_bytes()
    (scored,) = small_bundle.score([("lesion.png", read_scan(png, "lesion.png", modality="US"))])
    assert isinstance(scored, Scored)
    threshold = small_bundle.operating_point.threshold
    assert scored.call == (SUSPICIOUS if scored.probability >= threshold else NOT_SUSPICIOUS)
    frame = pd.DataFrame({"image": [png], "name": ["lesion.png"]})
    row = mlflow.pyfunc.load_model("models:/bcdiag-us/1").predict(frame).iloc[0]
    assert (row["probability_malignant"], row["call"]) == (scored.probability, scored.call)
    prediction = Predictor().predict(read_scan(png, "lesion.png", modality="US"), "lesion.png")
    assert (prediction.probability_malignant, prediction.call) == (scored.probability, scored.call)
    (tmp_path / "lesion.png").write_bytes(png)
    (result,) = score_files([tmp_path / "lesion.png"], modality="US")
    assert (result["probability_malignant"], result["call"]) == (scored.probability, scored.call)
    # The gate scores the prepared locked test set (busi256's test split) from this image on.
    locked, _ = gate._locked_scores("bcdiag-us", "1", data_dir, get_settings())
    assert locked.probabilities[0] == pytest.approx(scored.probability, abs=1e-6)
    assert locked.threshold == threshold


def test_a_scan_of_another_modality_is_rejected_alike_everywhere(
    small_bundle: ModelBundle,
    data_dir: Path,
    audit_trail: Storage,
) -> None:
    # An ultrasound model registered by mistake as the mammography champion.
    with mlflow.start_run():
        logged = log_bundle(small_bundle, registered_name="bcdiag-mg")
    force_champion(logged.registered_name, logged.version, storage=audit_trail, user="admin")
    path = data_dir / MAMMOGRAM
    text = "this is a MG image, but this model reads US images. Use the bcdiag MG model."
    scan = read_scan(path.read_bytes(), path.name)
    (rejected,) = small_bundle.score([(path.name, scan)])
    assert isinstance(rejected, ScanRejected)
    assert (rejected.code, rejected.message) == ("wrong-modality", f"{path.name}: {text}")
    frame = pd.DataFrame({"image": [path.read_bytes()], "name": [path.name]})
    row = mlflow.pyfunc.load_model("models:/bcdiag-mg/1").predict(frame).iloc[0]
    assert row["error"] == rejected.message and pd.isna(row["call"])
    with pytest.raises(ScanRejected) as raised:
        Predictor().predict(scan, path.name)
    assert (raised.value.code, raised.value.message) == ("wrong-modality", rejected.message)
    (result,) = score_files([path])
    assert result == {
        "file": str(path), "ok": False, "code": "wrong-modality", "message": f"{path}: {text}"
    }  # fmt: skip
