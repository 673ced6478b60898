"""Grad-CAM heatmaps of the malignant class, laid back onto the uploaded image, and
their overlay as a PNG.

The map is computed on the bundle's upright views: the normalised input, for every
ensemble member and (when the bundle uses flip test-time augmentation) the mirrored
view too, mirrored back; the maps are averaged. The turned views the score also
averages (`ModelBundle.tta_rotations`, a few degrees) are left out: turning their
maps back would blur the map more than they add. Each map is scaled to [0, 1] by
pytorch-grad-cam, so the average is in [0, 1] as well.

People see the upload, not the model's input: `for_display` shrinks the scan to at
most `DISPLAY_MAX_PX` on its long side, the way radiologists read it (bright tissue on
dark: an upload stored inverted is turned back), and `heat_for_display` lays the map
through the letterbox, mirror and crop onto it (`bcdiag.preprocess.Framing`, scaled to
the display size: 0.15 ms and 5 MB at most for a 3000x4000 scan, where mapping at full
size and shrinking that took 17 ms and 72 MB).

pytorch-grad-cam is imported with this module (~2 s on 2 cores), not on first use:
the clinician app imports it while its kernel is preheated, before anyone uploads.
"""

from __future__ import annotations

import io
from dataclasses import replace

import cv2
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
from bcdiag.preprocess import Framing
from bcdiag.serving.results import HEAT_FLOOR

MALIGNANT = 1
MIN_OVERLAY_PX = 256  # 28 px BreastMNIST images are unreadable at their own size
DISPLAY_MAX_PX = 1024  # long side of the image shown: a 3000x4000 mammogram is 48 MB as floats
HEAT_RAMP = 0.2  # above the floor the colour fades in over this much heat


def malignancy_score(output: torch.Tensor) -> torch.Tensor:
    """The quantity the bundle's probability is computed from: logit(malignant) - logit(other)."""
    return output[..., MALIGNANT] - output[..., 1 - MALIGNANT]


def target_layer(net: nn.Module) -> nn.Module:
    """The last feature maps before pooling: BcNet ``features[-1]``, torchvision ResNet
    ``layer4[-1]``, timm EfficientNet ``bn2`` (its head convolution, normalised and
    activated)."""
    if isinstance(net, BcNet):
        last: nn.Module = net.features[-1]
        return last
    head = getattr(net, "bn2", None)
    if isinstance(head, nn.Module) and hasattr(net, "conv_head"):
        return head
    layer4 = getattr(net, "layer4", None)
    if isinstance(layer4, nn.Sequential):
        block: nn.Module = layer4[-1]
        return block
    raise ConfigurationError(
        f"no Grad-CAM target layer is known for {type(net).__name__}; heatmaps exist for "
        "bcnet16, bcnet32, resnet18, resnet34 and the EfficientNets"
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
                axis = bundle.flip_axis
                flipped = cam(input_tensor=batch.flip(axis), targets=targets)[0]
                maps.append(np.flip(flipped, axis=axis - 2))
    heat = np.mean(maps, axis=0, dtype=np.float32)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def for_display(image: NDArray[np.float32], framing: Framing) -> NDArray[np.float32]:
    """The upload as people are shown it: at most `DISPLAY_MAX_PX` on its long side,
    aspect kept, whole (not cropped or mirrored), and bright tissue on dark: a mammogram
    stored inverted (`Framing.inverted`) is turned back, as the model read it."""
    shown = _resized(np.asarray(image, dtype=np.float32), _shrunk_shape(image.shape))
    return (1.0 - shown) if framing.inverted else shown


def heat_for_display(
    framing: Framing, heat: NDArray[np.float32], shape: tuple[int, ...]
) -> NDArray[np.float32]:
    """`heat` over the model input laid onto the upload shown at `shape` (from
    `for_display`): through the letterbox, the mirror and the crop; zero outside the crop."""
    rows, cols = shape[0], shape[1]
    down, across = rows / framing.shape[0], cols / framing.shape[1]
    top, bottom, left, right = framing.box
    y0, x0 = round(top * down), round(left * across)
    box = (y0, max(y0 + 1, round(bottom * down)), x0, max(x0 + 1, round(right * across)))
    return replace(framing, shape=(rows, cols), box=box).to_original(heat)


def overlay_png(image: NDArray[np.float32], heat: NDArray[np.float32], alpha: float = 0.5) -> bytes:
    """`image` in grey with `heat` (same shape, in [0, 1]) in the jet colormap on top, as
    PNG bytes; aspect kept.

    The colour is drawn only where the heat reaches `HEAT_FLOOR`, fading in to opacity
    `alpha` over `HEAT_RAMP`: elsewhere the image shows unchanged (``alpha=0``: the
    plain image). An image under `MIN_OVERLAY_PX` on its long side is enlarged by a
    whole factor (bilinear); one over `DISPLAY_MAX_PX` is shrunk to it.
    """
    if image.shape != heat.shape:
        raise ValueError(f"image {image.shape} and heat {heat.shape} differ in shape")
    shape = _display_shape(image.shape)
    grey = _resized(np.asarray(image, dtype=np.float32), shape)
    hot = _resized(np.asarray(heat, dtype=np.float32), shape)
    weight = np.float32(alpha) * np.clip((hot - HEAT_FLOOR) / HEAT_RAMP, 0.0, 1.0)[..., None]
    colour = colormaps["jet"](hot, bytes=True)[..., :3]  # uint8: a quarter of float64's memory
    rgb = (1.0 - weight) * (255.0 * grey[..., None]) + weight * colour
    pixels = np.round(np.clip(rgb, 0.0, 255.0)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _display_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) an image is drawn at: enlarged by a whole factor to at least
    `MIN_OVERLAY_PX` on its long side, or shrunk as `_shrunk_shape` does."""
    rows, cols = _shrunk_shape(shape)
    factor = max(1, -(-MIN_OVERLAY_PX // max(rows, cols)))
    return rows * factor, cols * factor


def _shrunk_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) scaled to at most `DISPLAY_MAX_PX` on the long side, aspect kept."""
    rows, cols = shape[0], shape[1]
    scale = min(1.0, DISPLAY_MAX_PX / max(rows, cols))
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def _resized(image: NDArray[np.float32], shape: tuple[int, int]) -> NDArray[np.float32]:
    """`image` at (rows, cols) `shape`: area averaging when shrinking, else bilinear."""
    if image.shape == shape:
        return image
    method = cv2.INTER_AREA if shape[0] < image.shape[0] else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (shape[1], shape[0]), interpolation=method)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)
