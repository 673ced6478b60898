"""``bcdiag benchmark quality`` and ``crossval``: held-out figures as a table or JSON."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from bcdiag.cli.recipes import build_recipe
from bcdiag.datasets.catalog import DATASETS, load_dataset
from bcdiag.settings import get_settings

F = TypeVar("F", bound=Callable[..., None])


def _recipe_options(command: F) -> F:
    """The options every benchmark shares: recipe overrides, data folder, JSON output."""
    options = [
        click.option("--epochs", type=int, help="Override the recipe's epochs per member."),
        click.option("--members", type=int, help="Override the recipe's ensemble size."),
        click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False)),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group()
def benchmark() -> None:
    """Benchmarks that print figures."""


@benchmark.command()
@click.option("--dataset", type=click.Choice(["breastmnist"]), default="breastmnist")
@click.option("--seeds", type=int, default=5, show_default=True, help="Independent repetitions.")
@_recipe_options
def quality(
    dataset: str,
    seeds: int,
    epochs: int | None,
    members: int | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Train the deployed recipe SEEDS times; test AUC/ACC beside MedMNIST v2's table."""
    from bcdiag.lifecycle.quality import run_quality  # torch + fastai: load on use

    config = build_recipe(dataset, epochs=epochs, members=members)
    with contextlib.redirect_stdout(sys.stderr):  # fastai's progress bars; stdout is the result
        report = run_quality(get_settings().required_data_dir(data_dir), seeds, config)
    click.echo(json.dumps(report.summary()) if as_json else report.table())


@benchmark.command()
@click.option("--dataset", type=click.Choice(DATASETS), default="mias", show_default=True)
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--image-size", type=int, help="Override the recipe's input size.")
@_recipe_options
def crossval(
    dataset: str,
    folds: int,
    epochs: int | None,
    members: int | None,
    image_size: int | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Patient-level k-fold cross-validation: pooled out-of-fold AUC with its interval."""
    from bcdiag.lifecycle.crossval import cross_validate  # torch + fastai: load on use
    from bcdiag.models.evaluate import format_table  # scipy: load on use

    folder = get_settings().required_data_dir(data_dir)
    config = build_recipe(dataset, epochs=epochs, members=members, image_size=image_size)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # fastai's progress bars; stdout is the result
        result = cross_validate(load_dataset(dataset, folder, config.image_size), config, folds)
    seconds = time.perf_counter() - start
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dataset": dataset,
                    "folds": folds,
                    "split": "patient-level k-fold",
                    **result.pooled.as_dict("pooled"),
                    "calls_sensitivity": result.pooled_calls.sensitivity,
                    "calls_specificity": result.pooled_calls.specificity,
                    "seconds": seconds,
                    "config": config.as_dict(),
                }
            )
        )
    else:
        click.echo(format_table([*result.per_fold, result.pooled]))
        calls = result.pooled_calls
        click.echo(
            f"calls at each fold's validation threshold: sensitivity {calls.sensitivity:.3f}, "
            f"specificity {calls.specificity:.3f}; {seconds:.0f} s"
        )
