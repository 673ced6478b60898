"""The viewer's pure-numpy side: region planning, area-averaging resample, the pyramid,
quantisation; and `ScanViewer.answer`, the kernel's reply to a view, on a real mammogram."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scan_corpus import MG_FILE

from bcdiag.app.viewer import ScanViewer
from bcdiag.app.viewer.regions import (
    LEVELS,
    MAX_SIDE,
    Box,
    Pyramid,
    Quantisation,
    heat_levels,
    plan_region,
    resample,
)
from bcdiag.scans.display import display_pixels

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def mammogram(data_dir: Path) -> np.ndarray:
    """The derived CBIS-DDSM mammogram's stored values (1108 x 716, uint16) as float32."""
    return pydicom.dcmread(data_dir / MG_FILE).pixel_array.astype(np.float32)


def test_resample_at_the_same_size_is_a_copy() -> None:
    image = RNG.random((7, 5)).astype(np.float32)
    np.testing.assert_array_equal(resample(image, Box(0, 0, 7, 5), (7, 5)), image)
    np.testing.assert_array_equal(resample(image, Box(2, 1, 5, 4), (3, 3)), image[2:5, 1:4])


def test_shrinking_by_whole_factors_is_the_block_mean() -> None:
    image = RNG.random((12, 18))
    blocks = image.reshape(4, 3, 6, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(resample(image, Box(0, 0, 12, 18), (4, 6)), blocks, rtol=1e-5)


def test_fractional_boxes_weigh_each_pixel_by_the_part_covered() -> None:
    """Every image pixel split into 4 x 4 equal parts: a box on that finer grid, averaged
    by whole blocks there, is what the fractional area average must give."""
    image = RNG.random((9, 11))
    fine = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)
    box = Box(1.25, 0.5, 8.75, 10.0)  # 7.5 x 9.5 pixels into 5 x 2 output pixels
    rows, columns = 5, 2
    window = fine[5:35, 2:40]  # the box on the fine grid: 30 x 38 = (5 * 6) x (2 * 19)
    expected = window.reshape(rows, 6, columns, 19).mean(axis=(1, 3))
    np.testing.assert_allclose(resample(image, box, (rows, columns)), expected, rtol=1e-5)


def test_growing_interpolates_between_pixel_centres() -> None:
    row = np.array([[0.0, 10.0, 20.0]])
    grown = resample(row, Box(0, 0, 1, 3), (1, 6))[0]
    np.testing.assert_allclose(grown, [0, 2.5, 7.5, 12.5, 17.5, 20])
    assert np.all(np.diff(grown) >= 0)


def test_pyramid_answers_like_the_full_image(mammogram: np.ndarray) -> None:
    pyramid = Pyramid(mammogram)
    whole = Box(0, 0, *mammogram.shape)
    for size, box in [
        ((138, 89), whole),
        ((300, 194), whole),
        ((200, 200), Box(300, 100, 700, 500)),
    ]:
        direct = resample(mammogram, box, size)
        via_levels = pyramid.region(box, size)
        error = float(np.abs(via_levels - direct).mean())
        assert error < 0.01 * float(mammogram.max()), (size, error)


def test_pyramid_of_odd_sizes_keeps_the_geometry() -> None:
    ramp = np.tile(np.arange(13, dtype=np.float32), (9, 1))  # value = column index
    pyramid = Pyramid(ramp)
    left_half = pyramid.region(Box(0, 0, 9, 6.5), (1, 1))
    assert float(left_half[0, 0]) == pytest.approx(ramp[:, :6].mean() + 0.25, abs=0.6)
    whole = pyramid.region(Box(0, 0, 9, 13), (2, 3))
    assert np.all(np.diff(whole, axis=1) > 0)  # left to right still rising


@pytest.mark.parametrize(
    ("box", "width", "height"),
    [
        (Box(0, 0, 1108, 716), 452, 700),  # the overview of a 600 x 700 canvas
        (Box(0, 0, 1108, 716), 900, 1393),  # the image smaller than the canvas
        (Box(-300.5, -200.2, 1400, 900), 640, 480),  # zoomed out, the box overhangs
        (Box(100.3, 200.7, 180.9, 260.1), 600, 700),  # deep zoom: about 7.5 per pixel
        (Box(10, 10, 610, 510), 600, 500),  # exactly one canvas pixel per image pixel
        (Box(10.5, 10.5, 510.5, 410.5), 505, 404),  # just above one per pixel
    ],
)
def test_no_answer_holds_more_pixels_than_asked_for(box: Box, width: int, height: int) -> None:
    plan = plan_region((1108, 716), box, width, height)
    for rows, columns in (plan.image_size, plan.heat_size):
        assert rows * columns <= width * height
    inside = (plan.image_box, plan.heat_box)
    assert all(0 <= b.top < b.bottom <= 1108 and 0 <= b.left < b.right <= 716 for b in inside)


def test_magnified_views_get_whole_native_pixels() -> None:
    plan = plan_region((1108, 716), Box(100.3, 200.7, 180.9, 260.1), 600, 700)
    assert plan.image_box == Box(100, 200, 181, 261)
    assert plan.image_size == (81, 61)  # native: the browser enlarges them
    assert plan.heat_box == Box(100.3, 200.7, 180.9, 260.1)
    assert plan.heat_size == (700, 516)  # the screen's resolution: a smooth outline


@pytest.mark.parametrize(
    ("box", "width", "height"),
    [
        (Box(0, 0, 0, 10), 100, 100),
        (Box(2000, 0, 2100, 10), 100, 100),
        (Box(0, 0, float("nan"), 10), 100, 100),
        (Box(0, 0, 100, 100), 0, 100),
        (Box(0, 0, 100, 100), MAX_SIDE + 1, 100),
    ],
)
def test_malformed_views_are_refused(box: Box, width: int, height: int) -> None:
    with pytest.raises(ValueError, match=r"region|view"):
        plan_region((1108, 716), box, width, height)


def test_integer_values_are_quantised_losslessly(mammogram: np.ndarray) -> None:
    quantisation = Quantisation.covering(mammogram)
    assert quantisation.scale == 1.0
    levels = quantisation.levels(mammogram)
    assert levels.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(quantisation.offset + levels * quantisation.scale, mammogram)


def test_fractional_values_are_quantised_to_half_a_step(mammogram: np.ndarray) -> None:
    values = mammogram * 0.37 - 1000.25
    quantisation = Quantisation.covering(values)
    levels = quantisation.levels(values)
    assert int(levels.min()) == 0 and int(levels.max()) == LEVELS
    error = np.abs(quantisation.offset + levels * quantisation.scale - values)
    assert float(error.max()) <= quantisation.scale / 2 + 1e-6
    flat = Quantisation.covering(np.full((4, 4), 5.5))
    assert flat == Quantisation(5.5, 1.0)


def test_heat_levels_are_clipped_bytes() -> None:
    heat = np.array([[-0.1, 0.0, 0.5, 1.0, 1.2]])
    np.testing.assert_array_equal(heat_levels(heat), [[0, 0, 128, 255, 255]])


def test_viewer_answers_a_view_with_at_most_the_pixels_asked_for(data_dir: Path) -> None:
    path = data_dir / MG_FILE
    image = display_pixels(path.read_bytes(), path.name)
    heat = np.clip(RNG.random((40, 30)), 0, 1)  # coarser, and of another aspect
    viewer = ScanViewer(image, heat)
    whole = {"top": 0, "left": 0, "bottom": 1108, "right": 716}
    deep = {"top": 400.5, "left": 300.25, "bottom": 480, "right": 360}  # ~8 per pixel
    requests = [
        {"id": "a:1", **whole, "width": 452, "height": 700},
        {"id": "a:2", **deep, "width": 478, "height": 636},
    ]
    for request in requests:
        reply, buffers = viewer.answer(request)
        asked = request["width"] * request["height"]
        rows, columns = reply["image_size"]
        heat_rows, heat_columns = reply["heat_size"]
        assert reply["id"] == request["id"]
        assert len(buffers[0]) == rows * columns * 2 and rows * columns <= asked
        assert len(buffers[1]) == heat_rows * heat_columns and heat_rows * heat_columns <= asked
        levels = np.frombuffer(buffers[0], "<u2").reshape(rows, columns)
        values = reply["offset"] + levels * reply["scale"]
        top, left, bottom, right = (round(v) for v in reply["image_box"])
        if (rows, columns) == (bottom - top, right - left):  # native pixels: exact
            np.testing.assert_array_equal(values, image.values[top:bottom, left:right])
    with pytest.raises(ValueError, match="outside"):
        viewer.answer({**requests[0], "top": 5000, "bottom": 6000})


def test_viewer_checks_its_heat_map_and_counts_revisions(data_dir: Path) -> None:
    path = data_dir / MG_FILE
    viewer = ScanViewer(display_pixels(path.read_bytes(), path.name))
    assert not viewer.has_heatmap and viewer.revision == 0 and viewer.overlay == "off"
    reply, buffers = viewer.answer(
        {"top": 0, "left": 0, "bottom": 1108, "right": 716, "width": 100, "height": 100}
    )
    assert reply["heat_size"] is None and len(buffers) == 1
    for bad in (np.full((4, 4), 1.5), np.full((4, 4), np.nan), np.zeros(5)):
        with pytest.raises(ValueError, match="heat map"):
            viewer.set_heatmap(bad)
    viewer.set_heatmap(np.zeros((3, 3)))
    assert viewer.has_heatmap and viewer.revision == 1
    assert list(itertools.chain(viewer.image_shape)) == [1108, 716]
