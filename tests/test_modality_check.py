"""An upload must look like the modality it is given as (or its DICOM header says).

The rates on the held-out test splits are measured in full by
`benchmarks/modality_check.py`; here the committed weights must keep the aims on them:
at least 99 % of real scans pass as their own modality, at least 95 % are caught when
given as the other one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scan_corpus import MG_FILE, dicom_bytes

from bcdiag.scans import judge, read_scan
from bcdiag.scans import modality_weights as fitted
from bcdiag.scans.modality_check import FEATURES, features, mismatch, passes, score

OTHER = {"MG": "US", "US": "MG"}


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_weights_fit_the_features() -> None:
    for values in (fitted.MEAN, fitted.SCALE, fitted.COEFFICIENTS):
        assert len(values) == len(FEATURES)
    assert 0.0 < fitted.MG_AT_LEAST <= fitted.US_AT_MOST < 1.0  # no score refused as both


def test_mias_jpeg_mammogram_given_as_ultrasound_is_refused(data_dir: Path) -> None:
    """The case of issue 12: mini-MIAS JPEGs were scored by the ultrasound model."""
    data = _jpeg(Image.open(data_dir / "mias" / "png512" / "mdb028.png"))
    verdict = judge(data, "mdb028.jpg", modality="US")
    assert (verdict.ok, verdict.code) == (False, "modality-mismatch")
    assert verdict.message.startswith(
        "mdb028.jpg: it was given as ultrasound (US), but the image looks like a mammogram, "
        "not an ultrasound image: "
    ), verdict.message
    assert "Choose mammography (MG) if that is what it is." in verdict.message
    assert judge(data, "mdb028.jpg", modality="MG").ok


def test_ultrasound_given_as_mammogram_is_refused(data_dir: Path) -> None:
    data = (data_dir / "busi256" / "images" / "benign_107.png").read_bytes()
    verdict = judge(data, "benign_107.png", modality="MG")
    assert (verdict.ok, verdict.code) == (False, "modality-mismatch")
    assert "looks like an ultrasound image, not a mammogram" in verdict.message
    assert judge(data, "benign_107.png", modality="US").ok


def test_dicom_saying_ultrasound_that_holds_a_mammogram_is_refused(data_dir: Path) -> None:
    ds = pydicom.dcmread(data_dir / MG_FILE)
    ds.Modality = "US"
    verdict = judge(dicom_bytes(ds), "relabelled.dcm")
    assert (verdict.ok, verdict.code) == (False, "modality-mismatch")
    assert verdict.message.startswith(
        "relabelled.dcm: this DICOM file says it is ultrasound (US), but the image looks like "
        "a mammogram"
    ), verdict.message


def test_a_28_px_mammogram_is_still_told_from_ultrasound(data_dir: Path) -> None:
    """The smallest image the intake takes (28 px) is judged: the features need no detail."""
    mammogram = Image.open(data_dir / "mias" / "png512" / "mdb028.png")
    small = np.asarray(mammogram.resize((28, 28), Image.Resampling.BOX))
    image = read_scan(_png(small), "small.png", modality="US").image
    assert (mismatch(image, "US") or "").startswith("looks like a mammogram")
    ultrasound = np.load(data_dir / "breastmnist" / "breastmnist.npz")["test_images"][0]
    assert mismatch(read_scan(_png(ultrasound), "us.png", modality="US").image, "US") is None


def _test_split(data_dir: Path) -> dict[str, list[tuple[str, bytes]]]:
    """Held-out images by true modality: BUSI, BreastMNIST, RSNA and mini-MIAS tests."""
    images: dict[str, list[tuple[str, bytes]]] = {"US": [], "MG": []}
    for folder, modality in (("busi256", "US"), ("rsna640", "MG")):
        with (data_dir / folder / "labels.csv").open() as labels:
            for row in csv.DictReader(labels):
                if row["split"] == "test":
                    images[modality].append(
                        (row["file"], (data_dir / folder / row["file"]).read_bytes())
                    )
    ultrasound = np.load(data_dir / "breastmnist" / "breastmnist.npz")["test_images"]
    images["US"] += [(f"breastmnist-{i}", _png(pixels)) for i, pixels in enumerate(ultrasound)]
    for path in sorted((data_dir / "mias" / "png512").glob("mdb*.png")):
        if ((int(path.stem[3:]) + 1) // 2) % 5 == 0:  # the benchmark's held-out patients
            images["MG"].append((path.name, path.read_bytes()))
    return images


@pytest.mark.parametrize("modality", ["US", "MG"])
def test_held_out_rates_meet_the_aims(data_dir: Path, modality: str) -> None:
    scores = [
        score(features(read_scan(data, name, modality=modality).image))
        for name, data in _test_split(data_dir)[modality]
    ]
    own = np.mean([passes(value, modality) for value in scores])
    caught = 1.0 - np.mean([passes(value, OTHER[modality]) for value in scores])
    assert own >= 0.99, f"{modality}: only {own:.1%} pass as {modality}"
    assert caught >= 0.95, f"{modality}: only {caught:.1%} caught as {OTHER[modality]}"
