"""Scores at the training set's prevalence and at the site's: the prior-shift formula, the
settings that turn it on, and what the predictor, the card and the report say."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from test_inference import breastmnist_png, register
from test_report import GENERATED_AT, pdf_text

from bcdiag.app.cards import summary_html
from bcdiag.app.report import analysis_pdf
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.metrics import at_prevalence
from bcdiag.scans import Scan, read_scan
from bcdiag.serving.inference import Predictor
from bcdiag.settings import Settings, get_settings
from bcdiag.storage.analysis_store import StoredAnalysis


def test_at_prevalence_known_values() -> None:
    # odds 4 x (1/99) / (34/66) = 4/51, so p' = 4/55
    assert at_prevalence(0.8, 0.34, 0.01) == pytest.approx(4 / 55, rel=1e-12)
    assert at_prevalence(0.5, 0.5, 0.01) == pytest.approx(0.01, rel=1e-12)
    assert at_prevalence(0.5, 0.2, 0.2) == pytest.approx(0.5, rel=1e-12)
    assert (at_prevalence(0.0, 0.34, 0.01), at_prevalence(1.0, 0.34, 0.01)) == (0.0, 1.0)


@pytest.mark.parametrize("p", [0.0, 0.001, 0.3, 0.5, 0.97, 1.0])
def test_at_prevalence_is_the_identity_at_the_training_prevalence_and_reversible(
    p: float,
) -> None:
    assert at_prevalence(p, 0.34, 0.34) == pytest.approx(p, abs=1e-15)
    assert at_prevalence(at_prevalence(p, 0.34, 0.006), 0.006, 0.34) == pytest.approx(p, abs=1e-12)


def test_at_prevalence_keeps_the_order_so_the_call_is_the_same() -> None:
    scores = [0.05, 0.2, 0.41, 0.6, 0.99]
    shifted = [at_prevalence(p, 0.34, 0.006) for p in scores]
    assert shifted == sorted(shifted) and len(set(shifted)) == len(scores)


@pytest.mark.parametrize(
    ("p", "trained", "site", "message"),
    [
        (1.2, 0.3, 0.01, r"p must be a probability in \[0, 1\], got 1.2"),
        (0.5, 0.0, 0.01, r"trained prevalence must be strictly between 0 and 1, got 0.0"),
        (0.5, 0.3, 1.0, r"site prevalence must be strictly between 0 and 1, got 1.0"),
    ],
)
def test_at_prevalence_refuses_what_is_not_a_probability(
    p: float, trained: float, site: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        at_prevalence(p, trained, site)


@pytest.mark.parametrize("modality", ["MG", "US"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "Input should be greater than 0"),
        ("1", "Input should be less than 1"),
        ("2", "Input should be less than 1"),
        ("abc", "Input should be a valid number"),
    ],
)
def test_a_site_prevalence_outside_0_1_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, modality: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(f"BCDIAG_PREVALENCE_{modality}", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert f"prevalence_{modality.lower()}" in str(refused.value)
    assert reason in str(refused.value) and f"input_value='{value}'" in str(refused.value)


def test_site_prevalences_are_unset_by_default_and_read_when_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BCDIAG_PREVALENCE_MG", raising=False)
    monkeypatch.delenv("BCDIAG_PREVALENCE_US", raising=False)
    assert (Settings().prevalence_mg, Settings().prevalence_us) == (None, None)
    monkeypatch.setenv("BCDIAG_PREVALENCE_MG", "0.006")
    assert (Settings().prevalence_mg, Settings().prevalence_us) == (0.006, None)


@pytest.fixture(scope="module")
def us_scan(data_dir: Path) -> Scan:
    """A BreastMNIST PNG read as an ultrasound scan."""
    return read_scan(breastmnist_png(data_dir, 0), "lesion.png", modality="US")


@pytest.fixture(scope="module")
def png() -> bytes:
    """A small grey PNG standing for the card's images."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 30), 128, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def site_prevalence(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    """``BCDIAG_PREVALENCE_US=0.01`` for one test (settings cache cleared around it)."""
    monkeypatch.setenv("BCDIAG_PREVALENCE_US", "0.01")
    get_settings.cache_clear()
    yield 0.01
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.usefixtures("mlflow_tracking", "audit_trail")
def test_the_predictor_states_the_training_prevalence_without_a_site_setting(
    small_bundle: ModelBundle, us_scan: Scan
) -> None:
    register(small_bundle)
    prediction = Predictor().predict(us_scan, "lesion.png")
    trained = small_bundle.info["train_prevalence"]
    assert trained == pytest.approx(125 / 464)  # busi256's training split
    assert prediction.training_prevalence == trained
    assert prediction.site_prevalence is prediction.probability_at_site_prevalence is None
    payload = prediction.as_json()
    assert payload["training_prevalence"] == trained
    assert "site_prevalence" not in payload and "probability_at_site_prevalence" not in payload


@pytest.mark.usefixtures("mlflow_tracking", "audit_trail")
def test_the_predictor_gives_the_probability_at_the_site_prevalence(
    small_bundle: ModelBundle,
    us_scan: Scan,
    site_prevalence: float,
) -> None:
    register(small_bundle)
    prediction = Predictor().predict(us_scan, "lesion.png")
    p, trained = prediction.probability_malignant, small_bundle.info["train_prevalence"]
    expected = at_prevalence(p, trained, site_prevalence)
    assert prediction.site_prevalence == site_prevalence
    assert prediction.probability_at_site_prevalence == pytest.approx(expected, rel=1e-12)
    assert expected < p  # 1% is rarer than the training set's 27%
    assert prediction.call == small_bundle.call(p)  # the call stays on the calibrated score
    payload = prediction.as_json()
    assert payload["site_prevalence"] == site_prevalence
    assert payload["probability_at_site_prevalence"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.usefixtures("mlflow_tracking", "audit_trail")
def test_a_bundle_without_training_prevalence_gets_no_site_probability(
    small_bundle: ModelBundle,
    us_scan: Scan,
    site_prevalence: float,
) -> None:
    info = {k: v for k, v in small_bundle.info.items() if k != "train_prevalence"}
    register(dataclasses.replace(small_bundle, info=info))  # as bundles trained before it
    prediction = Predictor().predict(us_scan, "lesion.png")
    assert prediction.training_prevalence is None
    assert prediction.site_prevalence == site_prevalence
    assert prediction.probability_at_site_prevalence is None  # not guessed
    payload = prediction.as_json()
    assert payload["training_prevalence"] is None
    assert payload["site_prevalence"] == site_prevalence
    assert payload["probability_at_site_prevalence"] is None


def _analysis(**details: Any) -> StoredAnalysis:
    return StoredAnalysis(
        id=1,
        scan_id=1,
        scan_sha256="a" * 64,
        user="alice",
        created_at=datetime(2026, 11, 27, 9, 15, tzinfo=UTC),
        model_name="bcdiag-mg",
        model_version="4",
        model_sha256="0123456789abcdef" * 4,
        probability=0.62,
        threshold=0.41,
        call="suspicious",
        heatmap_blob_key=None,
        details={"filename": "m.dcm", "sensitivity": 0.9, "specificity": 0.625, "modality": "MG"}
        | details,
    )


CALIBRATED = "score calibrated to the training set, 34.0% malignant"
NOT_RECORDED = (
    "score calibrated to the training set, whose share of malignant images is not recorded"
)
OPERATING_POINT = (
    "at threshold 0.410 on the score (sensitivity 90.0%, specificity 62.5% on validation)"
)
UNCHANGED = "the call does not change with the site's prevalence"


@pytest.mark.parametrize(
    ("details", "shown", "absent"),
    [
        ({"training_prevalence": 0.34}, [CALIBRATED, OPERATING_POINT], ["site's prevalence"]),
        ({}, [NOT_RECORDED], ["site's prevalence"]),
        (
            {
                "training_prevalence": 0.34,
                "site_prevalence": 0.006,
                "probability_at_site_prevalence": 0.0171,
            },
            [CALIBRATED, "Probability at this site's prevalence (0.6%)", "1.7%", UNCHANGED],
            [],
        ),
        (
            {"site_prevalence": 0.006, "probability_at_site_prevalence": None},
            [
                NOT_RECORDED,
                "Probability at this site's prevalence (0.6%)",
                "not available: this model did not record its training prevalence",
            ],
            [],
        ),
    ],
    ids=["trained", "older-model", "site", "site-older-model"],
)
def test_card_and_report_say_what_the_score_is_calibrated_to(
    png: bytes, details: dict[str, Any], shown: list[str], absent: list[str]
) -> None:
    analysis = _analysis(**details)
    card = summary_html(analysis)
    pdf = analysis_pdf(analysis, png, png, user="bob", generated_at=GENERATED_AT)
    report = " ".join(pdf_text(pdf).splitlines())
    assert "Probability of malignancy: <b>62.0%</b>" in card
    for text in shown:
        assert text in card, text
        assert text in report, text
    for text in absent:
        assert text not in card and text not in report


def test_an_upload_stored_inverted_says_how_it_is_shown(png: bytes) -> None:
    analysis = _analysis(shown_inverted=True)
    note = "shown as mammograms are read, bright tissue on dark; the file stores it inverted"
    assert note in summary_html(analysis)
    pdf = analysis_pdf(analysis, png, png, user="bob", generated_at=GENERATED_AT)
    assert note in " ".join(pdf_text(pdf).splitlines())
    assert "the file stores it inverted" not in summary_html(_analysis())


def test_a_blank_heatmap_is_said_to_be_no_finding(png: bytes) -> None:
    note = "no region raised the malignancy score enough to be coloured"
    blank = _analysis(heatmap_blank=True)
    assert note in summary_html(blank)
    pdf = analysis_pdf(blank, png, png, user="bob", generated_at=GENERATED_AT)
    assert note in " ".join(pdf_text(pdf).splitlines())
    assert note not in summary_html(_analysis(heatmap_blank=False))
    assert note not in summary_html(_analysis())  # analyses stored before the field existed
