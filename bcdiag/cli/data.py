"""``bcdiag data fetch``: download public data sets from their official sources."""

from __future__ import annotations

from pathlib import Path

import click

from bcdiag.datasets import breastmnist
from bcdiag.settings import get_settings


@click.group()
def data() -> None:
    """Public data sets."""


@data.command()
@click.argument("dataset", type=click.Choice(["breastmnist"]))
@click.option(
    "--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Default: BCDIAG_DATA_DIR, else <home>/data.",
)
def fetch(dataset: str, size: str, data_dir: Path | None) -> None:
    """Download DATASET from its official record and verify its checksum."""
    settings = get_settings()
    folder = data_dir or settings.data_dir or settings.home / "data"
    path = breastmnist.fetch(folder, size=int(size))
    click.echo(f"{dataset} ({size} px) verified at {path}")
