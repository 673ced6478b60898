"""``bcdiag predict`` and Dask batch scoring against a real MLflow server and real files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow_server import MlflowServer
from PIL import Image

from bcdiag.cli.predict import predict
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.champion_trail import force_champion
from bcdiag.models.metrics import at_prevalence
from bcdiag.models.registry import log_bundle, set_champion
from bcdiag.serving.batch import score_files
from bcdiag.settings import get_settings
from bcdiag.storage import Storage

pytestmark = pytest.mark.usefixtures("mlflow_tracking")


@pytest.fixture
def champion(small_bundle: ModelBundle, audit_trail: Storage) -> str:
    """small_bundle registered and promoted (audited, as `bcdiag promote --force`) as
    bcdiag-us version 1; yields its sha256."""
    with mlflow.start_run():
        mlflow.log_metric("valid_auc", 0.8)
        logged = log_bundle(small_bundle)
    force_champion(logged.registered_name, logged.version, storage=audit_trail, user="admin")
    return logged.sha256


def write_pngs(data_dir: Path, folder: Path, count: int) -> list[Path]:
    """The first `count` BreastMNIST test images as PNG files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
        images = npz["test_images"][:count]
    paths = [folder / f"us_{index:03d}.png" for index in range(count)]
    for path, pixels in zip(paths, images, strict=True):
        Image.fromarray(pixels).save(path)
    return paths


def test_cli_scores_png_rejects_ct_and_writes_heatmap(
    champion: str, mlflow_server: MlflowServer, data_dir: Path, tmp_path: Path
) -> None:
    (png,) = write_pngs(data_dir, tmp_path / "in", 1)
    ct = data_dir / "dicom" / "CT_small.dcm"
    heatmaps = tmp_path / "heatmaps"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url}
    env.pop("BCDIAG_MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "bcdiag", "predict", str(png), str(ct)]
    done = subprocess.run(
        [*command, "--json", "--modality", "US", "--heatmap", str(heatmaps)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    results = {Path(r["file"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert results.keys() == {png.name, ct.name}
    scored, rejected = results[png.name], results[ct.name]
    assert scored["ok"] is True
    assert 0.0 <= scored["probability_malignant"] <= 1.0
    assert scored["call"] in {"suspicious", "not suspicious"}
    assert isinstance(scored["threshold"], float)
    model = scored["model"]
    assert {k: model[k] for k in ("name", "version", "sha256")} == {
        "name": "bcdiag-us", "version": "1", "sha256": champion
    }  # fmt: skip
    assert datetime.fromisoformat(model["trained_at"]).tzinfo is not None
    assert scored["heatmap"] == str(heatmaps / "us_000_heatmap.png")
    with Image.open(scored["heatmap"]) as overlay:
        overlay.load()
        assert overlay.mode == "RGB" and overlay.size[0] >= 256
    assert rejected["ok"] is False
    assert rejected["code"] == "unsupported-modality"
    assert "CT" in rejected["message"]


def test_cli_single_file_readable_line(champion: str, data_dir: Path, tmp_path: Path) -> None:
    (png,) = write_pngs(data_dir, tmp_path, 1)
    result = CliRunner().invoke(predict, [str(png), "--modality", "us"])
    assert result.exit_code == 0, result.output
    assert f"bcdiag-us version 1 sha256 {champion[:12]}" in result.output
    assert "probability_malignant 0." in result.output and str(png) in result.output


def test_json_states_the_training_prevalence_and_the_probability_at_the_site_s(
    champion: str, small_bundle: ModelBundle, data_dir: Path, tmp_path: Path
) -> None:
    (png,) = write_pngs(data_dir, tmp_path, 1)
    arguments = [str(png), "--modality", "us"]
    plain = json.loads(CliRunner().invoke(predict, [*arguments, "--json"]).stdout)
    trained = small_bundle.info["train_prevalence"]
    assert plain["training_prevalence"] == trained
    assert "site_prevalence" not in plain and "probability_at_site_prevalence" not in plain
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BCDIAG_PREVALENCE_US", "0.01")
        get_settings.cache_clear()
        try:
            at_site = json.loads(CliRunner().invoke(predict, [*arguments, "--json"]).stdout)
            line = CliRunner().invoke(predict, arguments).stdout
        finally:
            get_settings.cache_clear()
    assert at_site == plain | {
        "site_prevalence": 0.01,
        "probability_at_site_prevalence": pytest.approx(
            at_prevalence(plain["probability_malignant"], trained, 0.01), rel=1e-12
        ),
    }  # every other field as without the setting
    shifted = at_site["probability_at_site_prevalence"]
    assert f"(threshold {plain['threshold']:.3f}), {shifted:.4f} at site prevalence 0.01," in line


def test_cli_png_without_modality_has_no_model(
    champion: str, data_dir: Path, tmp_path: Path
) -> None:
    (png,) = write_pngs(data_dir, tmp_path, 1)
    result = CliRunner().invoke(predict, [str(png)])
    assert result.exit_code == 1
    assert result.output.startswith("REJECTED [no-model]")
    assert "unknown modality" in result.output


def test_a_champion_moved_outside_bcdiag_gives_each_file_a_refusal(
    champion: str, small_bundle: ModelBundle, data_dir: Path, tmp_path: Path
) -> None:
    with mlflow.start_run():
        logged = log_bundle(small_bundle)
    set_champion(logged.registered_name, logged.version)  # by hand: no audited promotion
    paths = write_pngs(data_dir, tmp_path, 2)
    result = CliRunner().invoke(predict, [*map(str, paths), "--modality", "us", "--json"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(line["ok"], line["code"]) for line in lines] == [(False, "unapproved-champion")] * 2
    assert "has not passed the quality gate" in str(lines[0]["message"])


def test_folder_is_scored_on_local_dask_cluster(
    champion: str, data_dir: Path, tmp_path: Path
) -> None:
    paths = write_pngs(data_dir, tmp_path / "folder", 6)
    results = list(score_files([tmp_path / "folder"], modality="US"))
    assert sorted(r["file"] for r in results) == sorted(map(str, paths))
    assert all(r["ok"] and r["model"]["version"] == "1" for r in results)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_is_unpacked_and_scored(
    kind: str, champion: str, data_dir: Path, tmp_path: Path
) -> None:
    (png,) = write_pngs(data_dir, tmp_path / "in", 1)
    archive = tmp_path / f"scans.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.write(png, f"nested/{png.name}")
    else:
        with tarfile.open(archive, "w:gz") as tarred:
            tarred.add(png, f"nested/{png.name}")
    (result,) = score_files([archive], modality="US")
    assert result["ok"] is True
    assert Path(result["file"]).name == png.name


def test_broken_archive_is_rejected(champion: str, tmp_path: Path) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"not an archive" * 10)
    (result,) = score_files([archive], modality="US")
    assert result["ok"] is False and result["code"] == "bad-archive"


def test_zip_over_the_size_limit_is_rejected(
    champion: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("zeros.png", io.BytesIO(bytes(5000)).getvalue())
    monkeypatch.setenv("BCDIAG_MAX_DECODED_BYTES", "4000")
    get_settings.cache_clear()
    try:
        (result,) = score_files([archive], modality="US")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result["code"] == "too-large" and "unpacks to 5,000 bytes" in result["message"]
