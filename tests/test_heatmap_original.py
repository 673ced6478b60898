"""The heatmap laid back onto the uploaded image, through a real registered model and
real mammograms (rsna640).

What these tests prove: the map over the model's input lands, on the image people
see, where that input came from, through every step between them (inversion,
breast crop, mirror, letterbox, display shrinking, the overlay PNG). They use
`brightness_bundle`, a hand-set network whose Grad-CAM is, by construction, where its
input is brighter than a level; so the expected hot spot is known: a bright blob
pasted into the mammogram. They do not show that a *trained* model's Grad-CAM finds
lesions: that depends on the model, not on the mapping.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from PIL import Image
from test_inference import breastmnist_png, register
from torch import nn

from bcdiag.models.architectures import BcNet
from bcdiag.models.bundle import ModelBundle, OperatingPointSpec
from bcdiag.preprocess import prepare_framed
from bcdiag.scans import read_scan
from bcdiag.serving.heatmaps import DISPLAY_MAX_PX, heat_for_display, overlay_png
from bcdiag.serving.inference import Prediction, Predictor
from bcdiag.serving.results import HEAT_FLOOR

pytestmark = pytest.mark.usefixtures("mlflow_tracking", "audit_trail")

LEVEL = 0.8  # brighter than any tissue in the two mammograms used; the pasted blob is 1.0
BLOB_RADIUS = 22  # px of the 640 px upload
TOLERANCE = 0.04  # of the long side: the map is 16x16 cells over the model's input


def brightness_bundle(size: int = 128) -> ModelBundle:
    """An MG bundle of one hand-set bcnet16 whose malignancy score is the mean of
    ReLU(input − `LEVEL`), box-filtered and subsampled 8x.

    Its last stage is that map in channel 0 (the stem passes the input through, less
    `LEVEL`; each stride-2 stage takes a 3x3 mean; every other weight is zero), and the
    head reads channel 0 only, so Grad-CAM's channel weight is positive and its map is
    the bright region itself.
    """
    net = BcNet(width=16).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.zeros_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        net.features[0][0].weight[0, 0, 1, 1] = 1.0
        net.features[0][1].bias[0] = -LEVEL
        for stage in net.features[2:]:
            stage.body[0][0].weight[0, 0] = 1.0 / 9
            stage.body[1].weight[0, 0, 1, 1] = 1.0
        net.head[-1].weight[1, 0] = 1.0
    return ModelBundle(
        architecture="bcnet16",
        modality="MG",
        image_size=size,
        mean=0.0,
        std=1.0,
        members=[net.state_dict()],
        operating_point=OperatingPointSpec(0.6, 0.9, 0.5, "youden"),
        info={"train_prevalence": 0.34},
    )


def _grey(path: Path) -> NDArray[np.uint8]:
    return np.asarray(Image.open(path).convert("L"))


def _png(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _with_blob(pixels: NDArray[np.uint8], row: int, col: int, value: int) -> NDArray[np.uint8]:
    out = pixels.copy()
    cv2.circle(out, (col, row), BLOB_RADIUS, value, thickness=-1)
    return out


def _centre(weights: NDArray[np.floating]) -> NDArray[np.float64]:
    """(row, col) centroid of where `weights` is at least half its maximum."""
    rows, cols = np.nonzero(weights >= 0.5 * weights.max())
    return np.array([rows.mean(), cols.mean()])


def _overlay_colour(prediction: Prediction) -> NDArray[np.float64]:
    """How coloured each pixel of the overlay PNG is (grey pixels: 0)."""
    assert prediction.display_heatmap is not None
    png = overlay_png(prediction.display, prediction.display_heatmap)
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return rgb.max(axis=2) - rgb.min(axis=2)


# (file, stored inverted, mirrored before upload, two blob centres (row, col) in the breast)
CASES = [
    ("5_640805896.jpg", False, False, [(250, 120), (420, 220)]),
    ("45_310190625.jpg", True, False, [(220, 80), (420, 150)]),
    ("5_640805896.jpg", False, True, [(250, 519), (420, 419)]),  # chest wall on the right
]


@pytest.mark.parametrize(
    ("name", "inverted", "mirrored", "places"), CASES, ids=["upright", "inverted", "mirrored"]
)
def test_the_hot_spot_follows_a_pasted_blob_onto_the_upload(
    data_dir: Path,
    name: str,
    inverted: bool,
    mirrored: bool,
    places: list[tuple[int, int]],
) -> None:
    register(brightness_bundle())
    predictor = Predictor()
    pixels = _grey(data_dir / "rsna640" / "images" / name)
    if mirrored:
        pixels = np.ascontiguousarray(pixels[:, ::-1])
    spots = []
    for row, col in places:
        # A lesion is bright as radiologists read it: dark in a file stored inverted.
        upload = _with_blob(pixels, row, col, 0 if inverted else 255)
        scan = read_scan(_png(upload), "blob.png", modality="MG")
        prediction = predictor.predict(scan, "blob.png", heatmap=True)
        assert prediction.inverted is inverted
        heat = prediction.display_heatmap
        assert heat is not None and heat.shape == prediction.display.shape == upload.shape
        # The display shows the upload whole, bright tissue on dark, blob included.
        shown = upload if not inverted else 255 - upload
        np.testing.assert_allclose(prediction.display, shown / 255.0, atol=1e-6)
        expected = np.array([row, col])
        allowed = TOLERANCE * max(upload.shape)
        assert np.linalg.norm(_centre(heat) - expected) < allowed
        colour = _overlay_colour(prediction)
        assert colour.shape == upload.shape
        assert np.linalg.norm(_centre(colour) - expected) < allowed
        spots.append(_centre(heat))
    assert np.linalg.norm(spots[0] - spots[1]) > 100  # it moved with the blob


def test_heat_is_zero_outside_the_breast_crop(data_dir: Path) -> None:
    pixels = _grey(data_dir / "rsna640" / "images" / "5_640805896.jpg")
    _, framing = prepare_framed(pixels / np.float32(255), modality="MG", laterality=None, size=128)
    top, left, rows, cols = framing.placed
    heat = np.zeros((128, 128), dtype=np.float32)
    heat[top : top + rows, left : left + cols] = 1.0  # all of the breast, none of the border
    shown = heat_for_display(framing, heat, (320, 320))
    assert pixels[40:90, 480:600].max() == 255  # the burned-in "L MLO", outside the breast
    assert shown[20:45, 240:300].max() == 0.0 and shown[:, 200:].max() == 0.0
    assert shown[100:250, :120].min() == 1.0  # inside the breast


@pytest.mark.parametrize(
    ("rows", "cols", "drawn"),
    [(400, 640, (400, 640)), (4000, 3000, (DISPLAY_MAX_PX, 768)), (28, 28, (280, 280))],
)
def test_the_overlay_keeps_the_uploads_aspect(
    small_bundle: ModelBundle, data_dir: Path, rows: int, cols: int, drawn: tuple[int, int]
) -> None:
    register(small_bundle)
    pixels = np.asarray(Image.open(io.BytesIO(breastmnist_png(data_dir, 0))))
    upload = cv2.resize(pixels, (cols, rows), interpolation=cv2.INTER_LINEAR)
    scan = read_scan(_png(upload), "wide.png", modality="US")
    prediction = Predictor().predict(scan, "wide.png", heatmap=True)
    assert prediction.display.shape == (min(rows, drawn[0]), min(cols, drawn[1]))
    assert prediction.display_heatmap is not None
    with Image.open(io.BytesIO(overlay_png(prediction.display, prediction.display_heatmap))) as png:
        assert (png.height, png.width) == drawn
        assert png.width / png.height == pytest.approx(cols / rows, rel=0.01)


def test_heat_below_the_floor_leaves_the_image_as_it_is() -> None:
    grey = np.full((300, 400), 0.5, dtype=np.float32)
    heat = np.tile(np.linspace(0.0, 1.0, 400, dtype=np.float32), (300, 1))
    rgb = np.asarray(Image.open(io.BytesIO(overlay_png(grey, heat))), dtype=np.int16)
    cold = heat < HEAT_FLOOR
    assert (rgb[cold] == 128).all()  # the anatomy under cold heat is untouched
    assert np.ptp(rgb[heat > 0.9], axis=-1).min() > 40  # hot heat is in colour
    plain = np.asarray(Image.open(io.BytesIO(overlay_png(grey, heat, alpha=0.0))))
    assert (plain == 128).all()
    with pytest.raises(ValueError, match=r"differ in shape"):
        overlay_png(grey, heat[:, :10])


def test_mapping_at_display_size_equals_mapping_at_full_size_then_shrinking(
    data_dir: Path,
) -> None:
    """The cheap path (framing scaled to the display) against the plain one (map onto
    the 3000x4000 scan, then shrink): equal inside the crop, and the crop's edge is
    within one display pixel."""
    pixels = _grey(data_dir / "rsna640" / "images" / "45_310190625.jpg")
    full = cv2.resize(pixels, (3000, 4000), interpolation=cv2.INTER_LINEAR) / np.float32(255)
    _, framing = prepare_framed(full, modality="MG", laterality=None, size=128)
    cells = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    heat = cv2.resize(cells, (128, 128), interpolation=cv2.INTER_LINEAR)  # as smooth as Grad-CAM
    shape = (DISPLAY_MAX_PX, 768)
    plain = cv2.resize(framing.to_original(heat), shape[::-1], interpolation=cv2.INTER_AREA)
    mapped = heat_for_display(framing, heat, shape)
    one_px = np.ones((3, 3), np.uint8)
    inside = cv2.erode((mapped > 0).astype(np.uint8), one_px).astype(bool)
    np.testing.assert_allclose(mapped[inside], plain[inside], atol=0.01)
    for a, b in ((mapped, plain), (plain, mapped)):
        assert not ((a > 0) & ~cv2.dilate((b > 0).astype(np.uint8), one_px).astype(bool)).any()
