"""Each preprocessing step on images whose right answer is known."""

from __future__ import annotations

import numpy as np

from bcdiag.preprocess import crop_to_foreground, orient_chest_wall_left, pad_to_square, prepare


def _breast_on(side: str) -> np.ndarray:
    image = np.zeros((100, 80), dtype=np.float32)
    if side == "left":
        image[20:80, :30] = 0.8
    else:
        image[20:80, 50:] = 0.8
    return image


def test_right_breast_is_mirrored_left_breast_is_not() -> None:
    right = _breast_on("right")
    assert orient_chest_wall_left(right, "R")[:, :30].mean() > 0.3
    left = _breast_on("left")
    np.testing.assert_array_equal(orient_chest_wall_left(left, "L"), left)


def test_unknown_laterality_puts_brighter_side_left() -> None:
    oriented = orient_chest_wall_left(_breast_on("right"), None)
    assert oriented[:, :40].sum() > oriented[:, 40:].sum()


def test_crop_keeps_exactly_the_bright_box() -> None:
    cropped = crop_to_foreground(_breast_on("left"))
    assert cropped.shape == (60, 30)
    assert float(cropped.min()) == np.float32(0.8)


def test_crop_leaves_an_almost_empty_image_alone() -> None:
    image = np.zeros((50, 50), dtype=np.float32)
    image[0, 0] = 1.0
    assert crop_to_foreground(image).shape == (50, 50)


def test_pad_to_square_keeps_content_in_the_corner() -> None:
    padded = pad_to_square(np.ones((10, 4), dtype=np.float32))
    assert padded.shape == (10, 10)
    assert padded[:, :4].all() and not padded[:, 4:].any()


def test_prepare_gives_single_channel_square_in_unit_range() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((600, 400), dtype=np.float32)
    for modality in ("MG", "US", None):
        out = prepare(image, modality=modality, laterality="L", size=64)
        assert out.shape == (64, 64) and out.dtype == np.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_prepare_is_deterministic() -> None:
    image = np.linspace(0, 1, 200 * 300, dtype=np.float32).reshape(200, 300)
    first = prepare(image, modality="MG", laterality="R", size=32)
    np.testing.assert_array_equal(first, prepare(image, modality="MG", laterality="R", size=32))
