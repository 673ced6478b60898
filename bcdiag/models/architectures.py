"""Model architectures, chosen by name: one registry, one factory.

`bcnet` is a small residual network sized for 28–64 px single-channel inputs
(BreastMNIST): stride-1 stem, three stride-2 stages, global pooling. It costs
a fraction of ImageNet's ResNet-18 at these sizes, which is what makes several
seeds and an ensemble fit a CPU budget. torchvision and timm names are passed
through with ``pretrained=False``; weights come only from a local file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bcdiag.errors import ConfigurationError


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualStage(nn.Module):
    """Two 3x3 convolutions with a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(c_in, c_out, stride),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.body(x) + self.shortcut(x))
        return out


class BcNet(nn.Module):
    """Small residual CNN for low-resolution single-channel images."""

    def __init__(
        self, n_in: int = 1, n_out: int = 2, width: int = 16, dropout: float = 0.3
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(n_in, width),
            ResidualStage(width, width, 1),
            ResidualStage(width, 2 * width, 2),
            ResidualStage(2 * width, 4 * width, 2),
            ResidualStage(4 * width, 8 * width, 2),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(8 * width, n_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits


def _torchvision(name: str) -> Callable[[int, int], nn.Module]:
    def build(n_in: int, n_out: int) -> nn.Module:
        import torchvision  # +1.1 s, +165 MB over torch: only for these architectures

        model: nn.Module = torchvision.models.get_model(name, weights=None, num_classes=n_out)
        if n_in != 3 and name.startswith("resnet"):
            # torchvision ResNet stem: 64 filters, 7x7, stride 2
            model.conv1 = nn.Conv2d(n_in, 64, 7, 2, 3, bias=False)
        return model

    return build


def _timm(name: str) -> Callable[[int, int], nn.Module]:
    def build(n_in: int, n_out: int) -> nn.Module:
        import timm  # +1.5 s, +195 MB over torch: only for these architectures

        model: nn.Module = timm.create_model(
            name, pretrained=False, in_chans=n_in, num_classes=n_out
        )
        return model

    return build


def _lite0_imagenet(n_in: int, n_out: int) -> nn.Module:
    from bcdiag.models.pretrained import lite0_imagenet  # imports timm: as `_timm`

    return lite0_imagenet(n_in, n_out)


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "bcnet16": lambda n_in, n_out: BcNet(n_in, n_out, width=16),
    "bcnet32": lambda n_in, n_out: BcNet(n_in, n_out, width=32),
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "efficientnet_b0": _timm("efficientnet_b0"),
    "efficientnet_lite0": _lite0_imagenet,  # from ImageNet weights (`models.pretrained`)
}


class Tail(nn.Module):
    """An EfficientNet from its `first` stage on: what training changes when the stem and
    the stages before `first` stay frozen (`split_frozen`). Shares the model's modules."""

    def __init__(self, model: nn.Module, first: int) -> None:
        super().__init__()
        self.model, self.first = model, first

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.bn2(m.conv_head(m.blocks[self.first :](features)))  # type: ignore[index,operator]
        logits: torch.Tensor = m.forward_head(x)  # type: ignore[operator]
        return logits


def split_frozen(model: nn.Module, stages: int) -> tuple[nn.Module, nn.Module]:
    """(frozen head, trained tail) of a timm EfficientNet: the stem and its first `stages`
    stages, in eval mode without gradients, and the rest (`Tail`). Both share `model`'s
    modules, so training the tail trains `model`.

    Raises:
        ConfigurationError: `model` has no EfficientNet stages, or fewer than `stages`.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not 0 < stages < len(blocks):
        raise ConfigurationError(
            f"frozen_blocks={stages} needs an EfficientNet architecture with more stages "
            f"(efficientnet_lite0 has 7); {type(model).__name__} does not fit"
        )
    frozen = nn.Sequential(model.conv_stem, model.bn1, *blocks[:stages])  # type: ignore[arg-type]
    frozen.eval().requires_grad_(False)
    return frozen, Tail(model, stages)


def build_model(name: str, n_in: int = 1, n_out: int = 2, weights: Path | None = None) -> nn.Module:
    """A fresh model by registry name; `weights` (a local state-dict file) when given."""
    if name not in ARCHITECTURES:
        raise ConfigurationError(
            f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}"
        )
    model = ARCHITECTURES[name](n_in, n_out)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model
