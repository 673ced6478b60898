"""One training run end to end, as `bcdiag train`, a retraining cycle and first start run it.

An image set and a recipe in → train the ensemble (fastai, tracked per epoch) → calibrate and
choose the threshold on validation → evaluate on validation and the held-out
test split → log metrics, plots and the model to MLflow → register it.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch

from bcdiag.datasets import SPLITS, ImageSet
from bcdiag.datasets.catalog import SAME_IMAGES, load_dataset
from bcdiag.errors import BcdiagError
from bcdiag.lifecycle.evaluation import evaluate_parts, log_evaluation, score_parts
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.distributed import train_bundle_distributed
from bcdiag.models.evaluate import Evaluation, format_table
from bcdiag.models.model_card import ARTIFACT as CARD_ARTIFACT
from bcdiag.models.model_card import model_card
from bcdiag.models.recipe import ARTIFACT as RECIPE_ARTIFACT
from bcdiag.models.recipe import Recipe
from bcdiag.models.registry import (
    RegisteredModel,
    champion,
    latest_version,
    load_version,
    log_bundle,
)
from bcdiag.models.tracking import MLflowCallback
from bcdiag.models.train import train_bundle
from bcdiag.settings import get_settings


@dataclass(frozen=True)
class TrainingResult:
    """What one run produced."""

    run_id: str
    bundle: ModelBundle
    evaluations: list[Evaluation]
    registered: RegisteredModel | None
    seconds: float

    @property
    def table(self) -> str:
        """The evaluations as a plain-text table."""
        return format_table(self.evaluations)


def run_training(
    images: ImageSet,
    recipe: Recipe,
    *,
    params: Mapping[str, Any],
    experiment: str = "bcdiag",
    run_id: str | None = None,
    register: bool = True,
    processes: int = 1,
) -> TrainingResult:
    """Train, evaluate, log and (optionally) register one model: the one training run that
    `bcdiag train`, a retraining cycle and first start all make.

    Args:
        params: MLflow params about the data: ``dataset`` (``breastmnist``, ``folder``, …)
            and whatever else the caller records (e.g. a retraining cycle's counts).
        run_id: an MLflow run to log into (papermill callers create it, so they can
            attach the executed notebook); default: a new run in `experiment`.
        processes: data-parallel training processes on this machine (`bcdiag.models.distributed`).
    """
    start = time.perf_counter()
    mlflow.set_experiment(experiment)
    run_name = f"{params['dataset']}-{recipe.architecture}-seed{recipe.seed}"
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name) as run:
        mlflow.log_params({**params, "modality": images.modality, **recipe.as_params()})
        mlflow.log_dict(recipe.as_dict(), RECIPE_ARTIFACT)
        mlflow.log_params({f"n_{s}": int((images.split == s).sum()) for s in SPLITS})
        # The thread count is part of what makes a run repeatable (bcdiag.models.reproducibility).
        mlflow.log_params({"processes": processes, "torch_threads": get_settings().torch_threads})
        mlflow.set_tags(
            {
                "machine": platform.machine(),
                "torch": torch.__version__,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
            }
        )
        callback = MLflowCallback()
        if processes > 1:
            bundle = train_bundle_distributed(images, recipe, processes, run_id=run.info.run_id)
        else:
            bundle = train_bundle(images, recipe, cbs=[callback])
        parts = score_parts(bundle, images, external=False, valid_scores=bundle.valid_probabilities)
        evaluations = evaluate_parts(bundle, parts)
        log_evaluation(bundle, parts, evaluations, callback.history)
        card = model_card(bundle, images, evaluations, params)
        mlflow.log_text(card, CARD_ARTIFACT)
        registered = log_bundle(bundle, card=card) if register else None
        seconds = time.perf_counter() - start
        mlflow.log_metric("train_seconds", seconds)
    return TrainingResult(run.info.run_id, bundle, evaluations, registered, seconds)


def run_evaluation(
    model_name: str,
    version: str,
    dataset: str | None,
    *,
    data_dir: Path,
    experiment: str = "bcdiag",
    run_id: str | None = None,
) -> list[Evaluation]:
    """Evaluate a registered version on a data set: on its valid and test splits when
    the version was trained on it, else on every image (external validation).

    Args:
        version: a version number, ``"champion"`` or ``"latest"`` (the newest).
        dataset: default: the set the version was trained on.

    The threshold is the one the version chose on its validation data; nothing is refitted.
    """
    if version == "champion":
        current = champion(model_name)
        if current is None:
            raise BcdiagError(f"{model_name} has no champion yet; name a version number")
        version = current.version
    elif version == "latest":
        version = latest_version(model_name)
    bundle, info = load_version(model_name, version)
    seed = int(bundle.info.get("config", {}).get("seed", 0))
    trained_on = str(bundle.info.get("dataset"))
    dataset = dataset or trained_on
    if SAME_IMAGES.get(trained_on) == dataset:
        raise BcdiagError(
            f"{model_name} version {version} was trained on {trained_on}, made from the same "
            f"images as {dataset}: its figures there would score images it trained on"
        )
    images = load_dataset(dataset, data_dir, bundle.image_size, seed)
    external = dataset != trained_on
    mlflow.set_experiment(experiment)
    name = f"evaluate-{model_name}-v{version}-{dataset}"
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name):
        mlflow.log_params(
            {
                "model_name": model_name,
                "model_version": version,
                "dataset": dataset,
                "external": external,
            }
        )
        mlflow.set_tag("bcdiag.model_sha256", info.sha256)
        parts = score_parts(bundle, images, external=external)
        evaluations = evaluate_parts(bundle, parts)
        log_evaluation(bundle, parts, evaluations, [])
    return evaluations
