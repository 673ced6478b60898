"""Each preprocessing step on images whose right answer is known, and on real mammograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcdiag.preprocess import (
    breast_mask,
    chest_wall_on_right,
    letterbox,
    looks_inverted,
    prepare,
    prepare_framed,
)


def _breast_on(side: str, shape: tuple[int, int] = (200, 160)) -> np.ndarray:
    """A bright half-disc (the breast) against one side of a black image, with a bright
    burned-in label in the opposite top corner."""
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    wall = 0 if side == "left" else cols - 1
    image = np.where((yy - rows / 2) ** 2 + (xx - wall) ** 2 < (0.4 * rows) ** 2, 0.7, 0.0)
    label_cols = slice(cols - 20, cols - 5) if side == "left" else slice(5, 20)
    image[5:12, label_cols] = 1.0
    return image.astype(np.float32)


def test_chest_wall_side_from_header_else_from_brightness() -> None:
    right = _breast_on("right")
    assert chest_wall_on_right(right, "R") and chest_wall_on_right(right, None)
    assert not chest_wall_on_right(_breast_on("left"), None)
    assert not chest_wall_on_right(right, "L")  # the header wins


def test_inverted_mammogram_is_detected_by_its_bright_frame() -> None:
    image = _breast_on("left")
    assert not looks_inverted(image)
    assert looks_inverted(1.0 - image)


def test_breast_mask_is_the_largest_region_without_the_label() -> None:
    mask = breast_mask(_breast_on("left"))
    assert mask is not None
    assert mask[100, 10] and not mask[8, 150]  # breast in, burned-in label out
    assert breast_mask(np.zeros((64, 64), np.float32)) is None


def test_letterbox_keeps_aspect_and_places_as_asked() -> None:
    out, (top, left, rows, cols) = letterbox(np.ones((100, 50), np.float32), 64, left_aligned=True)
    assert (rows, cols) == (64, 32) and (top, left) == (0, 0)
    assert out[:, :32].all() and not out[:, 32:].any()
    out, (top, left, rows, cols) = letterbox(np.ones((50, 100), np.float32), 64, left_aligned=False)
    assert (top, left, rows, cols) == (16, 0, 32, 64)


def test_mammogram_prepared_upright_cropped_chest_wall_left_labels_out() -> None:
    image = _breast_on("right")
    for stored in (image, 1.0 - image):  # also when stored inverted
        out, framing = prepare_framed(stored, modality="MG", laterality=None, size=64)
        assert framing.flipped and framing.inverted == (stored is not image)
        assert out[:, :8].mean() > 0.5  # tissue against the left edge
        assert out[:4].max() < 0.9  # the 1.0 label is gone


def test_ultrasound_keeps_its_frame() -> None:
    image = np.full((100, 100), 0.9, np.float32)  # bright everywhere: not "inverted" for US
    out, framing = prepare_framed(image, modality="US", laterality=None, size=32)
    assert not framing.inverted and not framing.flipped and framing.box == (0, 100, 0, 100)
    assert np.allclose(out, 0.9)


def test_prepare_gives_single_channel_square_in_unit_range() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((600, 400), dtype=np.float32)
    for modality in ("MG", "US", None):
        out = prepare(image, modality=modality, laterality="L", size=64)
        assert out.shape == (64, 64) and out.dtype == np.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_prepare_is_deterministic() -> None:
    image = _breast_on("right")
    first = prepare(image, modality="MG", laterality="R", size=32)
    np.testing.assert_array_equal(first, prepare(image, modality="MG", laterality="R", size=32))


def _hot_spot(values: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(np.argmax(values)), values.shape)
    return int(row), int(col)


@pytest.mark.parametrize("name", ["5_640805896.jpg", "45_310190625.jpg"])  # upright, inverted
def test_a_blob_in_a_real_mammogram_maps_back_onto_itself(data_dir: Path, name: str) -> None:
    """What lights up at the blob in the model input lands on the blob in the upload,
    through inversion, crop, mirror and letterbox."""
    path = data_dir / "rsna640" / "images" / name
    original = np.asarray(Image.open(path).convert("L"), np.float32) / 255
    mask = breast_mask(1.0 - original if looks_inverted(original) else original)
    assert mask is not None
    inside = np.argwhere(mask[40:-40, 40:-40]) + 40
    for row, col in inside[:: max(1, len(inside) // 3)][:3]:
        image = original.copy()
        image[row - 6 : row + 6, col - 6 : col + 6] = 0.0 if looks_inverted(original) else 1.0
        prepared, framing = prepare_framed(image, modality="MG", laterality=None, size=128)
        brightest = prepared == prepared.max()
        back = framing.to_original(brightest.astype(np.float32))
        found = np.argwhere(back > 0.5).mean(axis=0)
        assert back.shape == original.shape
        assert abs(found[0] - row) < 10 and abs(found[1] - col) < 10, (found, row, col)
