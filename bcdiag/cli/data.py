"""``bcdiag data fetch``: download public data sets from their pinned public sources."""

from __future__ import annotations

from pathlib import Path

import click

from bcdiag.datasets import breastmnist, public_sets
from bcdiag.settings import get_settings


@click.group()
def data() -> None:
    """Public data sets."""


@data.command()
@click.argument("dataset", type=click.Choice(["breastmnist", *public_sets.SETS]))
@click.option(
    "--size",
    type=click.Choice(["28", "64", "128", "224"]),
    default="28",
    show_default=True,
    help="BreastMNIST release.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Default: BCDIAG_DATA_DIR, else <home>/data.",
)
@click.option(
    "--source",
    default=public_sets.GITHUB_RAW,
    show_default=True,
    help="Where rsna640, busi256 and mias are read from, laid out as "
    "<source>/<owner>/<repo>/<commit>/<path>: a mirror, or a file:// copy.",
)
def fetch(dataset: str, size: str, data_dir: Path | None, source: str) -> None:
    """Download DATASET from its pinned public source and verify every file's checksum."""
    settings = get_settings()
    folder = data_dir or settings.data_dir or settings.home / "data"
    if dataset == "breastmnist":
        if source != public_sets.GITHUB_RAW:
            raise click.UsageError("--source is for rsna640, busi256 and mias")
        path = breastmnist.fetch(folder, size=int(size))
        click.echo(f"{dataset} ({size} px) verified at {path}")
        return
    if size != "28":
        raise click.UsageError("--size is for breastmnist")
    for line in public_sets.SETS[dataset].notice:
        click.echo(line)
    fetched = public_sets.fetch(dataset, folder, source=source)
    click.echo(f"{dataset}: {fetched.files} files verified at {fetched.root}")
