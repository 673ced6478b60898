"""The retraining gate on constructed scores, the locked test sets it uses, and the
champion it records (against a real MLflow server)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from own_folder import MAMMOGRAM_FOLDER, mammogram_folder
from PIL import Image
from test_inference import breastmnist_png

from bcdiag.datasets import ImageSet
from bcdiag.datasets.catalog import load_dataset
from bcdiag.datasets.folder import FolderDataError
from bcdiag.datasets.mias import load as load_mias
from bcdiag.errors import BcdiagError
from bcdiag.lifecycle.gate import PROMOTED, REJECTED, Margins, Scores, judge, promote_if_passes
from bcdiag.lifecycle.retrain_data import (
    BASE_DATASETS,
    base_dataset,
    confirmed_set,
    load_base,
    lock_test_split,
    locked_patterns,
    locked_test_set,
    missing_base_data,
    retraining_set,
)
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.champion_trail import recorded_champion
from bcdiag.models.metrics import paired_auc_difference
from bcdiag.models.registry import CHAMPION, champion, log_bundle
from bcdiag.scans import read_scan
from bcdiag.serving.inference import Predictor
from bcdiag.serving.results import UnapprovedChampion
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage
from bcdiag.storage.analysis_store import NewAnalysis

RNG = np.random.default_rng(7)
Y = np.repeat([1, 0], [60, 140])
NOISE = RNG.normal(size=Y.size)


def _scores(version: str, signal: float, threshold: float = 0.5, noise: float = 1.0) -> Scores:
    """Probabilities whose separation of the classes grows with `signal`."""
    logits = signal * (Y - 0.5) + noise * NOISE
    return Scores(version, 1 / (1 + np.exp(-logits)), threshold)


def test_an_identical_challenger_is_non_inferior() -> None:
    champion = _scores("1", 2.0)
    decision = judge(Y, _scores("2", 2.0), champion, Margins())
    assert decision.decision == PROMOTED and decision.promoted
    assert decision.difference is not None and decision.difference.delta == 0.0
    assert decision.reason.startswith("non-inferior: AUC")
    assert decision.champion is not None and decision.champion.version == "1"
    assert (decision.n_test, decision.n_positive) == (200, 60)


def test_a_challenger_without_signal_is_rejected_on_auc() -> None:
    decision = judge(Y, _scores("2", 0.0, threshold=0.0), _scores("1", 3.0), Margins())
    assert decision.decision == REJECTED
    assert decision.challenger.sensitivity == 1.0  # flags everyone: sensitivity alone passes
    assert decision.difference is not None and decision.difference.high < 0
    assert "lower bound not above -0.02" in decision.reason
    assert "sensitivity 1.000 vs" in decision.reason and "within 0.05" in decision.reason


def test_the_auc_margin_is_the_boundary() -> None:
    champion, challenger = _scores("1", 3.0), _scores("2", 3.0, noise=1.15)
    low = paired_auc_difference(Y, challenger.probabilities, champion.probabilities).low
    assert -0.2 < low < 0
    assert judge(Y, challenger, champion, Margins(auc=-low + 0.001)).promoted
    rejected = judge(Y, challenger, champion, Margins(auc=-low - 0.001))
    assert not rejected.promoted
    assert f"{low:+.3f}" in rejected.reason


def test_sensitivity_may_drop_by_the_margin_and_no_more() -> None:
    champion = _scores("1", 2.0, threshold=0.5)
    positives = np.sort(champion.probabilities[Y == 1])
    drop = {k: float(positives[k]) + 1e-9 for k in (3, 4)}  # threshold above k+1 positives…
    for k, threshold in drop.items():
        challenger = Scores("2", champion.probabilities, threshold)
        decision = judge(Y, challenger, champion, Margins(sensitivity=0.05, specificity=1.0))
        assert decision.champion is not None
        lost = decision.champion.sensitivity - decision.challenger.sensitivity
        # the same ranking (AUC difference 0); only the operating point differs
        assert decision.difference is not None and decision.difference.delta == 0
        assert decision.promoted == (lost <= 0.05 + 1e-12), (k, lost)
    assert not judge(Y, Scores("2", champion.probabilities, 0.99), champion, Margins()).promoted


def test_specificity_may_drop_by_its_margin_and_no_more() -> None:
    champion = _scores("1", 2.0, threshold=0.5)
    negatives = np.sort(champion.probabilities[Y == 0])[::-1]
    above = negatives[negatives < 0.5]  # negatives the champion calls correctly, highest first
    for k in (13, 14, 15):  # a lower threshold turns the k highest of them into false alarms
        challenger = Scores("2", champion.probabilities, float(above[k - 1]) - 1e-9)
        decision = judge(Y, challenger, champion, Margins(sensitivity=1.0, specificity=0.10))
        assert decision.champion is not None
        lost = decision.champion.specificity - decision.challenger.specificity
        assert lost == pytest.approx(k / 140)
        assert decision.promoted == (lost <= 0.10 + 1e-12), (k, lost)
        assert ("more than 0.1 below" in decision.reason) != decision.promoted


def test_specificity_traded_for_as_much_sensitivity_passes() -> None:
    never_flags = _scores("1", 2.0, threshold=1.0)  # specificity 1.0, sensitivity 0.0
    challenger = _scores("2", 2.0, threshold=0.5)
    decision = judge(Y, challenger, never_flags, Margins())
    assert decision.champion is not None and decision.champion.specificity == 1.0
    assert decision.challenger.specificity < 0.9 and decision.challenger.sensitivity > 0.8
    assert decision.promoted, decision.reason
    assert "offset by the sensitivity gained" in decision.reason


def test_without_a_champion_the_auc_must_beat_chance() -> None:
    promoted = judge(Y, _scores("1", 2.0), None, Margins())
    assert promoted.promoted and promoted.champion is None and promoted.difference is None
    assert promoted.reason.startswith("no champion yet")
    assert promoted.challenger.auc.low > 0.5
    chance = judge(Y, _scores("1", 0.0), None, Margins())
    assert not chance.promoted
    assert "lower bound not above 0.5" in chance.reason


def test_figures_are_flat_for_mlflow_and_json_safe() -> None:
    decision = judge(Y, _scores("2", 2.0), _scores("1", 1.0), Margins())
    metrics = decision.metrics()
    for key in ("challenger_auc_low", "champion_auc_high", "auc_difference_low", "n_test"):
        assert isinstance(metrics[f"gate_{key}"], float)
    assert metrics["gate_promoted"] == 1.0
    assert json.loads(json.dumps(decision.as_json()))["champion"]["version"] == "1"


def test_margins_and_locked_sets_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCDIAG_GATE_AUC_MARGIN", "0.01")
    monkeypatch.setenv("BCDIAG_LOCKED_TEST_US", '["test-1*"]')
    settings = Settings()
    assert Margins.from_settings(settings) == Margins(auc=0.01, sensitivity=0.05, specificity=0.1)
    assert locked_patterns("US", settings) == ["test-1*"]
    assert settings.retrain_cron == "0 3 * * 0"  # weekly by default


def test_locked_test_sets_are_the_base_sets_own_test_splits(data_dir: Path) -> None:
    settings = get_settings()
    for modality, images, malignant in (("US", 98, 26), ("MG", 423, 148)):
        base = load_dataset(BASE_DATASETS[modality], data_dir, image_size=28)
        locked = lock_test_split(base, locked_patterns(modality, settings))
        assert np.array_equal(locked.split, base.split)  # the maintainers' split kept
        assert (len(locked.part("test")), int(locked.part("test").y.sum())) == (images, malignant)


def test_locked_patterns_move_exactly_those_patients_to_test(data_dir: Path) -> None:
    patterns = ["p00[1-8]", "p1[2-4]*"]  # mini-MIAS patients p001-p008 and p120-p149
    for seed in (0, 3):  # whatever split the data set itself draws
        locked = lock_test_split(load_mias(data_dir, image_size=28, seed=seed), patterns)
        test_patients = {g for g, s in zip(locked.groups, locked.split, strict=True) if s == "test"}
        assert test_patients == {f"p{n:03d}" for n in [*range(1, 9), *range(120, 150)]}
        for split in ("train", "valid"):
            assert not {g for g in locked.part(split).groups if g in test_patients}


def test_a_locked_set_without_both_classes_is_refused(breastmnist: ImageSet) -> None:
    with pytest.raises(Exception, match=r"locked test set of breastmnist .* needs 2\+ of each"):
        lock_test_split(breastmnist, ["test-0"])


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _confirm(storage: Storage, data: bytes, outcome: str, modality: str = "US") -> None:
    metadata = read_scan(data, "scan.png", modality=modality).metadata.as_dict()
    scan = storage.store_scan(
        data, filename="scan.png", metadata=metadata, user="dr-a", identity=None, case_name="Case A"
    )
    analysis = storage.record_analysis(
        NewAnalysis(
            scan_id=scan.id, user="dr-a", model_name="bcdiag-us", model_version="1",
            model_sha256="c" * 64, probability=0.4, threshold=0.5, call="not suspicious",
            heatmap_png=None,
        )
    )  # fmt: skip
    storage.record_feedback(analysis.id, "dr-a", outcome)


def test_confirmed_scans_join_training_only_and_never_a_locked_image(
    storage: Storage, breastmnist: ImageSet, data_dir: Path
) -> None:
    with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
        train, test = npz["train_images"], npz["test_images"]
    _confirm(storage, _png(train[1]), "biopsy-benign")
    _confirm(storage, _png(train[1]), "biopsy-malignant")  # same file: the newer outcome wins
    _confirm(storage, _png(train[4]), "normal-follow-up")
    _confirm(storage, _png(test[5]), "biopsy-malignant")  # a locked test image, uploaded
    _confirm(storage, _png(train[0]), "biopsy-benign")  # 1.5 grey levels from a held-out image
    _confirm(storage, _png(train[2]), "biopsy-benign", modality="MG")
    confirmed, counts = confirmed_set(storage, "US", 28)
    assert (counts.confirmed, counts.duplicate_sha256, counts.other_modality) == (6, 1, 1)
    assert len(confirmed) == 4 and set(confirmed.split) == {"train"}
    assert sorted(confirmed.y.tolist()) == [0, 0, 1, 1]

    locked = lock_test_split(breastmnist, locked_patterns("US", get_settings()))
    merged, counts = retraining_set(locked, confirmed, counts)
    assert (counts.near_locked, counts.used) == (2, 2)
    for split in ("valid", "test"):
        assert np.array_equal(merged.part(split).x, breastmnist.part(split).x)
    assert (merged.split == "train").sum() == 546 + 2
    assert merged.part("train").y[-2:].tolist() == [1, 0]  # train[1] malignant, train[4] normal


def test_missing_base_data_is_named(tmp_path: Path, data_dir: Path) -> None:
    settings = get_settings()
    assert missing_base_data("US", data_dir, settings) is None
    assert missing_base_data("MG", data_dir, settings) is None
    assert "BCDIAG_DATA_DIR is not set" in str(missing_base_data("US", None, settings))
    assert "base data set rsna640 is missing" in str(missing_base_data("MG", tmp_path, settings))
    own = Settings(base_folder_mg=tmp_path / "films")
    assert "films/labels.csv is missing" in str(missing_base_data("MG", data_dir, own))


def test_a_site_folder_replaces_the_public_base_and_its_test_rows_are_locked(
    data_dir: Path, tmp_path: Path
) -> None:
    own = Settings(base_folder_mg=mammogram_folder(data_dir, tmp_path / "films"))
    assert base_dataset("MG", own) == "folder" and base_dataset("US", own) == "busi256"
    assert missing_base_data("MG", None, own) is None  # no BCDIAG_DATA_DIR needed
    locked = locked_test_set("MG", data_dir, 32, own)
    assert locked.ids == [
        f"films/{Path(f).name}" for f, _, split in MAMMOGRAM_FOLDER if split == "test"
    ]
    assert set(locked.split) == {"test"} and int(locked.y.sum()) == 2
    unsplit = Settings(
        base_folder_mg=mammogram_folder(data_dir, tmp_path / "unsplit", with_split=False)
    )
    with pytest.raises(FolderDataError, match="needs a split column"):
        load_base("MG", data_dir, 32, unsplit)


@pytest.mark.usefixtures("mlflow_tracking")
def test_only_the_gates_champion_scores_not_a_rejected_version_moved_by_hand(
    small_bundle: ModelBundle,
    data_dir: Path,
    audit_trail: Storage,
) -> None:
    # The defect: a researcher gave `champion` to a version the gate had rejected, and the
    # next upload was scored by it.
    never_suspicious = replace(
        small_bundle, operating_point=replace(small_bundle.operating_point, threshold=1.0)
    )
    for bundle in (small_bundle, never_suspicious):
        with mlflow.start_run():
            log_bundle(bundle)
    settings, gate = get_settings(), {"data_dir": data_dir, "storage": audit_trail, "user": "cron"}
    assert promote_if_passes("bcdiag-us", "1", settings=settings, **gate).promoted
    assert not promote_if_passes("bcdiag-us", "2", settings=settings, **gate).promoted
    assert recorded_champion(audit_trail, "bcdiag-us") == "1"
    scan = read_scan(breastmnist_png(data_dir, 0), "lesion.png", modality="US")
    predictor = Predictor(champion_check_s=0)
    assert predictor.predict(scan, "lesion.png").model.version == "1"
    MlflowClient().set_registered_model_alias("bcdiag-us", CHAMPION, "2")
    with pytest.raises(UnapprovedChampion, match="has not passed the quality gate"):
        predictor.predict(scan, "lesion.png")


@pytest.mark.usefixtures("mlflow_tracking")
def test_a_version_trained_on_the_locked_sets_own_images_is_never_gated(
    small_bundle: ModelBundle, data_dir: Path, audit_trail: Storage
) -> None:
    """BreastMNIST is busi256 at 28 px: its training images are busi256's test images."""
    with mlflow.start_run():
        log_bundle(replace(small_bundle, info={**small_bundle.info, "dataset": "breastmnist"}))
    gate = {"data_dir": data_dir, "storage": audit_trail, "user": "cron"}
    with pytest.raises(BcdiagError, match=r"trained on breastmnist, which is made from the same"):
        promote_if_passes("bcdiag-us", "1", settings=get_settings(), **gate)
    assert champion("bcdiag-us") is None
