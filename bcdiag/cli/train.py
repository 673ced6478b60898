"""``bcdiag train``: run notebooks/train.ipynb through papermill as one MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bcdiag.cli.recipes import build_recipe
from bcdiag.datasets.catalog import DATASETS
from bcdiag.settings import get_settings


@click.command()
@click.option("--dataset", type=click.Choice(DATASETS), default="breastmnist", show_default=True)
@click.option(
    "--recipe",
    "recipe_location",
    metavar="FILE_OR_RUN_URI",
    help="Train with this recipe (a JSON file, or runs:/<run id>/recipe.json to re-run a "
    "logged run's recipe) instead of the data set's; the options below still replace fields.",
)
@click.option(
    "--architecture", help="Registry name (bcdiag.models.architectures); default: recipe's."
)
@click.option("--image-size", type=int, help="Model input side in pixels.")
@click.option("--epochs", type=int, help="Epochs per ensemble member.")
@click.option("--members", type=int, help="Ensemble members (each its own seed).")
@click.option("--seed", type=int, help="Random seed; default: the recipe's (0).")
@click.option(
    "--processes",
    type=int,
    default=1,
    show_default=True,
    help="Data-parallel training processes (fastai distributed; gloo on CPU, NCCL on GPU).",
)
@click.option("--experiment", default="bcdiag", show_default=True, help="MLflow experiment.")
@click.option("--register/--no-register", default=True, show_default=True)
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Default: BCDIAG_DATA_DIR."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run id and the recipe as JSON.")
def train(
    dataset: str,
    recipe_location: str | None,
    architecture: str | None,
    image_size: int | None,
    epochs: int | None,
    members: int | None,
    seed: int | None,
    processes: int,
    experiment: str,
    register: bool,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Train, evaluate and register a model with the data set's recipe (overridable)."""
    from bcdiag.lifecycle.notebook_runs import run_notebook  # torch, fastai, mlflow: load on use

    recipe = build_recipe(
        dataset,
        recipe_location,
        architecture=architecture,
        image_size=image_size,
        epochs=epochs,
        members=members,
        seed=seed,
    )
    folder = data_dir or get_settings().data_dir
    parameters = {
        "dataset": dataset,
        "recipe": recipe.as_dict(),
        "register": register,
        "processes": processes,
        "data_dir": str(folder) if folder else None,
    }
    run_id = run_notebook("train", parameters, experiment=experiment, run_name=f"train-{dataset}")
    if as_json:
        click.echo(json.dumps({"run_id": run_id, "dataset": dataset, **recipe.as_dict()}))
    else:
        click.echo(f"training run {run_id} finished (MLflow experiment {experiment!r})")
