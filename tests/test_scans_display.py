"""`display_pixels` on real files of the shared data folder, and on DICOMs made from them
by changing the header the way scanners write it (as `scan_corpus` does)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from scan_corpus import MG_FILE, dicom_bytes, native_mg

from bcdiag.errors import ScanRejected
from bcdiag.scans import judge
from bcdiag.scans.display import RASTER_SCALE, DisplayImage, display_pixels


def _shown(data: bytes, name: str = "scan.dcm") -> DisplayImage:
    return display_pixels(data, name)


def test_cbis_ddsm_mammogram_keeps_its_stored_values_and_gets_a_percentile_window(
    data_dir: Path,
) -> None:
    path = data_dir / MG_FILE
    image = _shown(path.read_bytes(), path.name)
    stored = pydicom.dcmread(path).pixel_array
    assert image.values.dtype == np.float32 and image.values.shape == stored.shape
    np.testing.assert_array_equal(image.values, stored)
    low, high = np.percentile(stored, [0.5, 99.5])
    assert image.window_center == pytest.approx((low + high) / 2, rel=0.02)
    assert image.window_width == pytest.approx(high - low, rel=0.02)
    assert not image.invert and image.window_function == "LINEAR"


def test_the_first_of_several_windows_and_its_function(data_dir: Path) -> None:
    ds = native_mg(data_dir)
    ds.WindowCenter, ds.WindowWidth = [30000, 20000], [40000, 10000]
    ds.VOILUTFunction = "SIGMOID"
    image = _shown(dicom_bytes(ds))
    assert (image.window_center, image.window_width) == (30000, 40000)
    assert image.window_function == "SIGMOID"


def test_rescale_gives_the_modality_units(data_dir: Path) -> None:
    ds = native_mg(data_dir)
    stored = ds.pixel_array.astype(np.float64)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 0.5, -1000, "US"
    image = _shown(dicom_bytes(ds))
    np.testing.assert_allclose(image.values, stored * 0.5 - 1000)
    low, high = np.percentile(stored * 0.5 - 1000, [0.5, 99.5])
    assert image.window_center == pytest.approx((low + high) / 2, rel=0.02)


def test_monochrome1_mammogram_is_flagged_for_inverted_display(data_dir: Path) -> None:
    ds = native_mg(data_dir)
    inverted = (65535 - ds.pixel_array).astype(np.uint16)
    ds.PixelData, ds.PhotometricInterpretation = inverted.tobytes(), "MONOCHROME1"
    image = _shown(dicom_bytes(ds))
    assert image.invert
    np.testing.assert_array_equal(image.values, inverted)  # values as stored, not flipped


def test_real_monochrome1_file_with_its_window(data_dir: Path) -> None:
    """RG3_J2KR (NEMA, CR, JPEG 2000, MONOCHROME1, window 550/1024) given as MG: CR itself
    is refused by the intake (next test)."""
    ds = pydicom.dcmread(data_dir / "dicom" / "RG3_J2KR.dcm")
    ds.Modality = "MG"
    image = _shown(dicom_bytes(ds))
    assert image.invert
    assert (image.window_center, image.window_width) == (550, 1024)
    assert image.values.shape == (1760, 1760) and float(image.values.max()) == 1023


def test_a_voi_lut_without_window_gives_its_input_range(data_dir: Path) -> None:
    ds = native_mg(data_dir)
    item = Dataset()
    item.LUTDescriptor = [4096, 1000, 12]
    item.add_new("LUTData", "OW", np.arange(4096, dtype=np.uint16).tobytes())
    ds.VOILUTSequence = [item]
    image = _shown(dicom_bytes(ds))
    assert image.window_center == 1000 + 4095 / 2  # inputs 1000 .. 5095
    assert image.window_width == 4096


def test_real_windowed_ultrasound_dicom(data_dir: Path) -> None:
    path = data_dir / "dicom" / "JPGLosslessP14SV1_1s_1f_8b.dcm"
    image = _shown(path.read_bytes(), path.name)
    assert (image.window_center, image.window_width) == (127, 254)
    np.testing.assert_array_equal(image.values, pydicom.dcmread(path).pixel_array)


def test_colour_ultrasound_dicom_is_shown_as_luminance_on_the_8_bit_scale(
    data_dir: Path,
) -> None:
    path = data_dir / "dicom" / "US1_J2KR.dcm"
    image = _shown(path.read_bytes(), path.name)
    assert image.values.shape == (480, 640)
    assert float(image.values.min()) >= 0 and float(image.values.max()) <= RASTER_SCALE
    assert (image.window_center, image.window_width, image.invert) == (127.5, 255, False)


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_png_and_jpeg_keep_their_grey_levels(data_dir: Path, kind: str) -> None:
    pixels = np.asarray(Image.open(data_dir / "mias" / "png512" / "mdb001.png").convert("L"))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind, quality=100)
    image = _shown(buffer.getvalue(), f"mdb001.{kind.lower()}")
    tolerance = 1e-3 if kind == "PNG" else 3.0  # JPEG at quality 100 is still lossy
    assert float(np.abs(image.values - pixels).mean()) <= tolerance
    assert (image.window_center, image.window_width, image.invert) == (127.5, 255, False)


def test_a_file_the_intake_refuses_is_refused_with_its_code(data_dir: Path) -> None:
    path = data_dir / "dicom" / "CT_small.dcm"
    with pytest.raises(ScanRejected) as error:
        _shown(path.read_bytes(), path.name)
    assert error.value.code == "unsupported-modality"
    assert error.value.message.startswith("CT_small.dcm:")


def test_a_stored_scan_is_shown_alike_without_being_judged_again(data_dir: Path) -> None:
    """With the metadata its upload was accepted with, a greyscale DICOM skips the guarded
    worker (most of the time to show a full-size mammogram) and looks the same."""
    ds = native_mg(data_dir)
    inverted = (65535 - ds.pixel_array).astype(np.uint16)
    ds.PixelData, ds.PhotometricInterpretation = inverted.tobytes(), "MONOCHROME1"
    data = dicom_bytes(ds)
    verdict = judge(data, "mg.dcm")
    assert verdict.scan is not None
    judged = display_pixels(data, "mg.dcm")
    stored = display_pixels(data, "mg.dcm", accepted=verdict.scan.metadata.as_dict())
    np.testing.assert_array_equal(stored.values, judged.values)
    assert (stored.window_center, stored.window_width, stored.invert) == (
        judged.window_center, judged.window_width, judged.invert,
    )  # fmt: skip
    assert stored.invert
