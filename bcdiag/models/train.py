"""Training with fastai: a Learner per ensemble member over prepared image arrays.

The recipe (see notebooks/train.ipynb for the reasoning): single-channel input,
a network sized for the input (`bcnet16` at 28 px), flips / small rotations /
zoom / lighting augmentation on the batch, class-weighted cross-entropy with
label smoothing, AdamW with the one-cycle schedule, several members with their
own seeds averaged over test-time views (mirrored, and turned ±8°). Calibration
(temperature) and the operating threshold are fitted on the validation split only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import fastai.callback.progress
import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from fastai.data.core import DataLoaders, TfmdDL
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import RocAucBinary
from fastai.optimizer import Adam
from fastai.torch_core import TensorCategory, TensorImageBW
from fastai.vision.augment import aug_transforms
from fastai.vision.data import Normalize
from fastprogress.fastprogress import progress_bar
from numpy.typing import NDArray
from torch import nn

from bcdiag.datasets import ImageSet
from bcdiag.models.architectures import build_model, split_frozen
from bcdiag.models.bundle import ModelBundle, OperatingPointSpec
from bcdiag.models.metrics import (
    apply_temperature,
    choose_threshold,
    fit_temperature,
    operating_point,
)
from bcdiag.models.recipe import Recipe
from bcdiag.models.reproducibility import reproducible
from bcdiag.settings import get_settings


class ArrayDataset:
    """Indexable (input, label) pairs as fastai tensor types: images (N, H, W) as
    `TensorImageBW`, or cached feature maps (N, C, H, W) as plain tensors."""

    def __init__(self, x: NDArray[np.float32] | torch.Tensor, y: NDArray[np.int64]) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, TensorCategory]:
        label = TensorCategory(int(self.y[i]))
        if isinstance(self.x, torch.Tensor):
            return self.x[i], label
        return TensorImageBW(torch.from_numpy(self.x[i])[None]), label


class FlipFeatures(Callback):  # type: ignore[misc]  # fastai is untyped
    """Training augmentation on cached feature maps: half of each batch turned upside
    down (the only flip that keeps a mammogram's chest wall on the left)."""

    def before_batch(self) -> None:
        if self.training:
            (x,) = self.learn.xb
            upside_down = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
            self.learn.xb = (torch.where(upside_down, x.flip(2), x),)


def make_dataloaders(images: ImageSet, config: Recipe, mean: float, std: float) -> DataLoaders:
    """Train (augmented, shuffled) and valid (plain) fastai DataLoaders of images.

    Mammograms are never mirrored left-right: preprocessing puts the chest wall on the left.
    """
    normalize = Normalize.from_stats([mean], [std])
    augment = aug_transforms(
        do_flip=images.modality != "MG",
        flip_vert=False,
        max_rotate=config.max_rotate,
        max_zoom=config.max_zoom,
        max_lighting=config.max_lighting,
        max_warp=0.0,
        p_affine=0.75,
        p_lighting=0.75,
    )
    train, valid = images.part("train"), images.part("valid")
    return _dataloaders(
        ArrayDataset(train.x, train.y),
        ArrayDataset(valid.x, valid.y),
        config.batch_size,
        train_tfms=[*augment, normalize],
        valid_tfms=[normalize],
    )


def _dataloaders(
    train: ArrayDataset,
    valid: ArrayDataset,
    batch_size: int,
    train_tfms: Sequence[Any] = (),
    valid_tfms: Sequence[Any] = (),
) -> DataLoaders:
    return DataLoaders(
        TfmdDL(
            train,
            bs=batch_size,
            shuffle=True,
            drop_last=True,
            after_batch=list(train_tfms),
            num_workers=0,  # in-memory arrays: worker processes only add start-up cost
        ),
        TfmdDL(valid, bs=256, after_batch=list(valid_tfms), num_workers=0),
        device=torch.device("cuda" if torch.cuda.is_available() else "cpu"),
    )


def cached_features(
    frozen: nn.Module, x: NDArray[np.float32], mean: float, std: float, batch: int = 64
) -> torch.Tensor:
    """The frozen head's output for every prepared image (N, size, size), on the CPU."""
    out = []
    with torch.inference_mode():
        for start in progress_bar(range(0, len(x), batch), leave=False):
            images = torch.from_numpy(np.ascontiguousarray(x[start : start + batch]))[:, None]
            out.append(frozen((images - mean) / std))
    return torch.cat(out) if out else torch.zeros(0)


def build_learner(
    dls: DataLoaders,
    model: nn.Module,
    train_y: NDArray[np.int64],
    config: Recipe,
    cbs: Sequence[Callback] = (),
) -> Learner:
    """A fastai Learner for `model` with class-weighted, label-smoothed cross-entropy."""
    positives = max(int(train_y.sum()), 1)
    weight = torch.tensor([1.0, (len(train_y) - positives) / positives], device=dls.device)
    learner = Learner(
        dls,
        model,
        loss_func=CrossEntropyLossFlat(weight=weight, label_smoothing=config.label_smoothing),
        opt_func=partial(Adam, wd=config.weight_decay, decouple_wd=True),
        metrics=[RocAucBinary()],
        cbs=list(cbs),
    )
    if torch.cuda.is_available():
        learner = learner.to_fp16()
    return learner


def fit_one_cycle(learner: Learner, epochs: int, lr: float) -> None:
    """fastai's one-cycle schedule in this process."""
    learner.fit_one_cycle(epochs, lr)


def best_epoch_callbacks(patience: int | None) -> list[Callback]:
    """With a `patience`: keep the weights of the epoch with the best validation AUC and
    stop after `patience` epochs without a better one (fastai's tracker callbacks)."""
    if patience is None:
        return []
    auc = {"monitor": "roc_auc_score", "comp": np.greater}
    return [SaveModelCallback(**auc), EarlyStoppingCallback(**auc, patience=patience)]


def fit_member(
    images: ImageSet,
    config: Recipe,
    member: int,
    stats: tuple[float, float],
    cbs: Sequence[Callback] = (),
    fit: Callable[[Learner, int, float], None] = fit_one_cycle,
) -> dict[str, torch.Tensor]:
    """Train one ensemble member; its weights as CPU tensors.

    With ``frozen_blocks``, the frozen head runs once per image and the tail trains on
    its cached output, augmented by `FlipFeatures`.

    Args:
        stats: the training split's (mean, std), fixed for every member.
        fit: how the learner is fitted for (epochs, lr); data-parallel training in a
            launched process group passes `bcdiag.models.distributed.fit_data_parallel`.
    """
    with reproducible(config.seed * 1000 + member, get_settings().torch_threads):
        model = build_model(config.architecture)
        train = images.part("train")
        if config.frozen_blocks:
            frozen, trained = split_frozen(model, config.frozen_blocks)
            valid = images.part("valid")
            dls = _dataloaders(  # its shuffling RNG is seeded here
                ArrayDataset(cached_features(frozen, train.x, *stats), train.y),
                ArrayDataset(cached_features(frozen, valid.x, *stats), valid.y),
                config.batch_size,
            )
            learner = build_learner(dls, trained, train.y, config, [FlipFeatures(), *cbs])
        else:
            dls = make_dataloaders(images, config, *stats)  # its shuffling RNG is seeded here
            learner = build_learner(dls, model, train.y, config, cbs)
        with tempfile.TemporaryDirectory() as folder:  # where SaveModelCallback keeps the best
            learner.path = Path(folder)
            learner.add_cbs(best_epoch_callbacks(config.patience))
            fit(learner, config.epochs, config.lr)
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def finish_bundle(
    images: ImageSet,
    config: Recipe,
    members: list[dict[str, torch.Tensor]],
    stats: tuple[float, float],
    info: dict[str, Any] | None = None,
) -> ModelBundle:
    """Bundle trained members; fit temperature and choose the threshold on validation only."""
    bundle = ModelBundle(
        architecture=config.architecture,
        modality=images.modality,
        image_size=config.image_size,
        mean=stats[0],
        std=stats[1],
        members=members,
        tta_rotations=tuple(float(d) for d in config.tta_rotations),
        info={
            "dataset": images.name,
            "config": config.as_dict(),
            # share of malignant images the model learnt from: scores are calibrated to it
            "train_prevalence": float(images.part("train").y.mean()),
            **(info or {}),
        },
    )
    valid = images.part("valid")
    logits = bundle.logits(valid.x)  # once: at 384 px a pass over valid takes minutes
    bundle.temperature = fit_temperature(valid.y, logits)
    probabilities = apply_temperature(logits, bundle.temperature).astype(np.float32)
    bundle.valid_probabilities = probabilities
    threshold = choose_threshold(
        valid.y, probabilities, rule=config.threshold_rule, min_sensitivity=config.min_sensitivity
    )
    point = operating_point(valid.y, probabilities, threshold)
    bundle.operating_point = OperatingPointSpec(
        threshold, point.sensitivity, point.specificity, config.threshold_rule
    )
    return bundle


def training_stats(images: ImageSet) -> tuple[float, float]:
    """Mean and standard deviation of the training split (the model's normalisation)."""
    train = images.part("train").x
    return float(train.mean()), float(train.std())


def train_bundle(images: ImageSet, config: Recipe, cbs: Sequence[Callback] = ()) -> ModelBundle:
    """Train every ensemble member in this process, then calibrate on validation."""
    torch.set_num_threads(get_settings().torch_threads)
    stats = training_stats(images)
    members = [fit_member(images, config, m, stats, cbs) for m in range(config.members)]
    return finish_bundle(images, config, members, stats)
