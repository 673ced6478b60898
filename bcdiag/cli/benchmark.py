"""``bcdiag benchmark quality``: held-out figures over several seeds, beside the published."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from bcdiag.errors import ConfigurationError
from bcdiag.settings import get_settings


@click.group()
def benchmark() -> None:
    """Benchmarks that print figures."""


@benchmark.command()
@click.option("--dataset", type=click.Choice(["breastmnist"]), default="breastmnist")
@click.option("--seeds", type=int, default=5, show_default=True, help="Independent repetitions.")
@click.option("--epochs", type=int, help="Override the recipe's epochs per member.")
@click.option("--members", type=int, help="Override the recipe's ensemble size.")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def quality(
    dataset: str,
    seeds: int,
    epochs: int | None,
    members: int | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Train the deployed recipe SEEDS times; test AUC/ACC beside MedMNIST v2's table."""
    from bcdiag.quality import run_quality  # torch + fastai: load on use
    from bcdiag.train import recipe_for

    folder = data_dir or get_settings().data_dir
    if folder is None:
        raise ConfigurationError("set BCDIAG_DATA_DIR or pass --data-dir")
    overrides: dict[str, Any] = {"epochs": epochs, "members": members}
    config = dataclasses.replace(
        recipe_for(dataset), **{k: v for k, v in overrides.items() if v is not None}
    )
    report = run_quality(folder, seeds, config)
    click.echo(json.dumps(report.summary()) if as_json else report.table())
