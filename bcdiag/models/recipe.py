"""The training recipe: every hyper-parameter of a run, as one typed object that travels whole.

The CLI (`bcdiag train`, ``--recipe``), the ``BCDIAG_RETRAIN_RECIPE`` setting and
the notebooks' ``recipe`` parameter all build it through `Recipe.parse`, which
refuses an unknown or mistyped key with a message naming it and the valid keys.
MLflow records it as params and as the artifact ``recipe.json``, which
``bcdiag train --recipe runs:/<run id>/recipe.json`` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from bcdiag.errors import BcdiagError

ARTIFACT = "recipe.json"


class RecipeError(BcdiagError):
    """A recipe could not be read or has an unknown or invalid value."""


class Recipe(BaseModel):
    """Hyper-parameters of one training run (see notebooks/train.ipynb for the reasoning)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = "bcnet16"
    image_size: int = 28
    # EfficientNet stages kept at their ImageNet weights; their output is computed once
    # per image, so an epoch costs only the stages after them (0: train every layer)
    frozen_blocks: int = Field(default=0, ge=0)
    # keep the epoch with the best validation AUC, stopping after this many epochs without
    # a better one (None: train every epoch, keep the last)
    patience: int | None = Field(default=None, ge=1)
    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    members: int = 4
    seed: int = 0
    threshold_rule: Literal["youden", "sensitivity"] = "youden"
    min_sensitivity: float | None = None
    max_rotate: float = 15.0
    max_zoom: float = 1.1
    max_lighting: float = 0.2
    tta_rotations: tuple[float, ...] = (-8.0, 8.0)

    @model_validator(mode="after")
    def _sensitivity_rule_has_its_floor(self) -> Recipe:
        if (self.threshold_rule == "sensitivity") != (self.min_sensitivity is not None):
            raise ValueError(
                "min_sensitivity is required by, and only allowed with, "
                "threshold_rule 'sensitivity'"
            )
        return self

    @classmethod
    def parse(cls, values: Mapping[str, Any], source: str, base: Recipe | None = None) -> Recipe:
        """`base` (default: the defaults) with `values` replacing its fields.

        Raises:
            RecipeError: a key is not a field or a value has the wrong type; the message
                names `source` (e.g. ``"BCDIAG_RETRAIN_RECIPE"``), the key and the valid keys.
        """
        if not isinstance(values, Mapping):
            raise RecipeError(f"{source}: a recipe is a JSON object of fields, not {values!r}")
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise RecipeError(
                f"{source}: unknown recipe key {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(cls.model_fields)}"
            )
        merged = {**(base or cls()).model_dump(), **values}
        try:
            return cls.model_validate(merged)
        except ValidationError as error:
            problems = "; ".join(_problem(e) for e in error.errors())
            raise RecipeError(f"{source}: {problems}") from None

    @classmethod
    def load(cls, location: str) -> Recipe:
        """A recipe from a JSON file or an MLflow artifact URI (``runs:/<id>/recipe.json``)."""
        if "://" in location or location.startswith("runs:/"):
            import mlflow  # only for artifact URIs: keeps `bcdiag train --help` fast

            try:
                values = mlflow.artifacts.load_dict(location)
            except Exception as error:
                raise RecipeError(f"recipe {location} could not be read: {error}") from error
        else:
            path = Path(location)
            if not path.is_file():
                raise RecipeError(f"recipe file {location} does not exist")
            try:
                values = json.loads(path.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise RecipeError(f"recipe file {location} is not valid JSON: {error}") from None
        return cls.parse(values, location)

    def changed(self, **values: Any) -> Recipe:
        """This recipe with `values` replacing fields (validated like `parse`)."""
        return self.parse(values, "recipe change", base=self)

    def as_dict(self) -> dict[str, Any]:
        """Every field as JSON values: what ``recipe.json`` and papermill carry."""
        return self.model_dump(mode="json")

    def as_params(self) -> dict[str, str | int | float | bool]:
        """Every field as an MLflow param: scalars as they are, the rest as JSON."""
        return {
            key: value if isinstance(value, str | int | float | bool) else json.dumps(value)
            for key, value in self.as_dict().items()
        }


def recipe_for(dataset: str, changes: Mapping[str, Any] | None = None, source: str = "") -> Recipe:
    """The recipe bcdiag trains `dataset` with, `changes` replacing its fields."""
    if dataset == "rsna640":
        # EfficientNet-Lite0 from ImageNet, the first 5 of 7 stages frozen and computed
        # once: what 2 CPU cores train within the first start's 30 minutes. 384 px
        # letterboxed beat 512 on valid in the GPU sweep (benchmarks/results/). The tail
        # overfits after 2-3 epochs (valid AUC 0.685 at epoch 3 of 8, 0.634 at the end):
        # the best validation epoch is kept.
        base = Recipe(
            architecture="efficientnet_lite0", image_size=384, frozen_blocks=5, epochs=8,
            patience=2, batch_size=32, lr=2e-3, weight_decay=1e-2, members=1, tta_rotations=(),
        )  # fmt: skip
    elif dataset == "busi256":
        base = Recipe(
            architecture="efficientnet_lite0", image_size=224, frozen_blocks=4, epochs=12,
            batch_size=32, lr=2e-3, weight_decay=1e-2, members=1, tta_rotations=(),
        )  # fmt: skip
    elif dataset == "mias":
        # 64 px keeps masses and the breast outline, not calcifications: a CPU-sized
        # research baseline on 322 digitised films, not a screening model.
        base = Recipe(image_size=64, epochs=30, members=2, batch_size=16, lr=2e-3)
    else:
        base = Recipe()
    return Recipe.parse(changes or {}, source or f"recipe for {dataset}", base=base)


def _problem(error: ErrorDetails) -> str:
    """One validation error as ``key = value: why`` (or just why, for the whole recipe)."""
    key = ".".join(map(str, error["loc"]))
    why = str(error["msg"]).removeprefix("Value error, ")
    return f"{key} = {error['input']!r}: {why}" if key else why
