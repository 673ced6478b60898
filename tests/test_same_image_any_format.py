"""The same pixels give the same model input, and so the same score, in every container.

A real BreastMNIST ultrasound image and a real mini-MIAS mammogram (neither spans the
full 0-255 range, so a stretch to the image's own extremes would show) are written as
8- and 16-bit PNG, JPEG and several DICOMs made with pydicom; each is judged as an
upload is and prepared for the model.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    UltrasoundImageStorage,
)
from scan_corpus import dicom_bytes

from bcdiag.models.bundle import ModelBundle, Scored
from bcdiag.preprocess import prepare
from bcdiag.scans import Scan, judge

SIZE = 128
JPEG_TOLERANCE = 3 / 255  # JPEG at quality 100 is still lossy: a few grey levels per pixel
JPEG_SCORE_TOLERANCE = 0.01
_SOP_CLASS = {"US": UltrasoundImageStorage, "MG": DigitalMammographyXRayImageStorageForPresentation}


def _raster(pixels: np.ndarray, kind: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind, **options)
    return buffer.getvalue()


def _dicom(
    pixels: np.ndarray, modality: str, photometric: str = "MONOCHROME2", **attributes: object
) -> bytes:
    """A single-frame DICOM of ``pixels`` (uint8 or uint16, all bits stored)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = _SOP_CLASS[modality]
    ds.Modality = modality
    ds.set_pixel_data(pixels, photometric, bits_stored=pixels.dtype.itemsize * 8)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return dicom_bytes(ds)


def _identity_voi_lut() -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new("LUTData", "US", list(range(256)))  # VR US or OW: say which
    return item


def containers(pixels: np.ndarray, modality: str) -> dict[str, bytes]:
    """``pixels`` (uint8) in every container the intake accepts, by name."""
    wide = pixels.astype(np.uint16) * 257
    return {
        "8bit.png": _raster(pixels, "PNG"),
        "16bit.png": _raster(wide, "PNG"),
        "q100.jpg": _raster(pixels, "JPEG", quality=100),
        "8bit.dcm": _dicom(pixels, modality),
        "16bit.dcm": _dicom(wide, modality),
        "monochrome1.dcm": _dicom(255 - pixels, modality, "MONOCHROME1"),
        "window.dcm": _dicom(wide, modality, WindowCenter=32768, WindowWidth=65536),
        "voi_lut.dcm": _dicom(pixels, modality, VOILUTSequence=[_identity_voi_lut()]),
    }


@pytest.fixture(scope="module")
def images(data_dir: Path) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (uint8 pixels, modality) of the two real images."""
    ultrasound = np.load(data_dir / "breastmnist" / "breastmnist.npz")["test_images"][0]
    mammogram = np.asarray(Image.open(data_dir / "mias" / "png512" / "mdb028.png"))
    return {"breastmnist-test-0": (ultrasound, "US"), "mdb028": (mammogram, "MG")}


def _read(data: bytes, name: str, modality: str) -> Scan:
    verdict = judge(data, name, modality=modality)
    assert verdict.scan is not None, verdict.message
    return verdict.scan


def _prepared(scan: Scan) -> np.ndarray:
    meta = scan.metadata
    return prepare(scan.image, modality=meta.modality, laterality=meta.laterality, size=SIZE)


@pytest.mark.parametrize("image", ["breastmnist-test-0", "mdb028"])
def test_every_container_gives_the_same_model_input(
    images: dict[str, tuple[np.ndarray, str]], image: str
) -> None:
    pixels, modality = images[image]
    scans = {
        name: _read(data, name, modality) for name, data in containers(pixels, modality).items()
    }
    np.testing.assert_allclose(scans["8bit.png"].image, pixels / 255.0, atol=1e-6)
    reference = _prepared(scans["8bit.png"])
    for name, scan in scans.items():
        tolerance = JPEG_TOLERANCE if name.endswith(".jpg") else 1 / 255
        difference = np.abs(_prepared(scan) - reference)
        assert float(difference.mean()) <= tolerance, name
        if not name.endswith(".jpg"):
            assert float(difference.max()) <= tolerance, name


@pytest.mark.parametrize("image", ["breastmnist-test-0", "mdb028"])
def test_every_container_gets_the_same_score(
    images: dict[str, tuple[np.ndarray, str]], small_bundle: ModelBundle, image: str
) -> None:
    pixels, modality = images[image]
    bundle = replace(small_bundle, modality=modality)  # any real model will do
    scans = [
        (name, _read(data, name, modality)) for name, data in containers(pixels, modality).items()
    ]
    scores = {name: result for name, result in zip(dict(scans), bundle.score(scans), strict=True)}
    reference = scores["8bit.png"]
    assert isinstance(reference, Scored)
    for name, scored in scores.items():
        assert isinstance(scored, Scored), name
        tolerance = JPEG_SCORE_TOLERANCE if name.endswith(".jpg") else 1e-3
        assert scored.probability == pytest.approx(reference.probability, abs=tolerance), name
