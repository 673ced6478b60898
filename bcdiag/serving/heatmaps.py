"""Grad-CAM heatmaps of the malignant class, and their overlay on the scan as a PNG.

The map is computed on the bundle's upright views: the normalised input, for every
ensemble member and (when the bundle uses flip test-time augmentation) the mirrored
view too, mirrored back; the maps are averaged. The turned views the score also
averages (`ModelBundle.tta_rotations`, a few degrees) are left out: turning their
maps back would blur the map more than they add. Each map is scaled to [0, 1] by
pytorch-grad-cam, so the average is in [0, 1] as well.

pytorch-grad-cam is imported with this module (~2 s on 2 cores), not on first use:
the clinician app imports it while its kernel is preheated, before anyone uploads.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib import colormaps
from numpy.typing import NDArray
from PIL import Image
from pytorch_grad_cam import GradCAM
from torch import nn

from bcdiag.errors import ConfigurationError
from bcdiag.models.architectures import BcNet
from bcdiag.models.bundle import ModelBundle

MALIGNANT = 1


def malignancy_score(output: torch.Tensor) -> torch.Tensor:
    """The quantity the bundle's probability is computed from: logit(malignant) - logit(other)."""
    return output[..., MALIGNANT] - output[..., 1 - MALIGNANT]


MIN_OVERLAY_PX = 256  # 28 px BreastMNIST images are unreadable at their own size


def target_layer(net: nn.Module) -> nn.Module:
    """The last residual stage: BcNet ``features[-1]``, torchvision ResNet ``layer4[-1]``."""
    if isinstance(net, BcNet):
        last: nn.Module = net.features[-1]
        return last
    layer4 = getattr(net, "layer4", None)
    if isinstance(layer4, nn.Sequential):
        block: nn.Module = layer4[-1]
        return block
    raise ConfigurationError(
        f"no Grad-CAM target layer is known for {type(net).__name__}; heatmaps exist for "
        "bcnet16, bcnet32, resnet18 and resnet34"
    )


def grad_cam(
    bundle: ModelBundle, nets: list[nn.Module], prepared: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Grad-CAM of the malignancy score for one prepared (size, size) image.

    Args:
        bundle: supplies the normalisation and whether to average the mirrored view.
        nets: the bundle's networks (`ModelBundle.networks`), in eval mode.
        prepared: the model input from `bcdiag.preprocess.prepare`.

    Returns:
        A (size, size) float32 map in [0, 1]; high where evidence for malignancy lies.
    """
    image = torch.from_numpy(np.ascontiguousarray(prepared, dtype=np.float32))[None, None]
    batch = (image - bundle.mean) / bundle.std
    targets = [malignancy_score]  # explain the score itself, not one logit
    maps: list[NDArray[np.float32]] = []
    for net in nets:
        # The context manager removes its hooks: the networks are cached and shared.
        with GradCAM(model=net, target_layers=[target_layer(net)]) as cam:
            maps.append(cam(input_tensor=batch, targets=targets)[0])
            if bundle.tta_flip:
                maps.append(cam(input_tensor=batch.flip(3), targets=targets)[0][:, ::-1])
    heat = np.mean(maps, axis=0, dtype=np.float32)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def overlay_png(
    prepared: NDArray[np.float32], heat: NDArray[np.float32], alpha: float = 0.4
) -> bytes:
    """The prepared image in grey with `heat` in the jet colormap on top, as PNG bytes.

    Both are upscaled (bilinear) by a whole factor to at least `MIN_OVERLAY_PX` pixels.
    """
    side = prepared.shape[0]
    scaled = side * max(1, -(-MIN_OVERLAY_PX // side))
    grey = _upscale(prepared, scaled)
    colour = colormaps["jet"](_upscale(heat, scaled))[..., :3]
    rgb = (1.0 - alpha) * grey[..., None] + alpha * colour
    pixels = np.round(255.0 * np.clip(rgb, 0.0, 1.0)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _upscale(image: NDArray[np.float32], side: int) -> NDArray[np.float32]:
    resized = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F").resize(
        (side, side), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
