"""``bcdiag promote`` and ``bcdiag evaluate``: registered models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bcdiag.datasets.catalog import DATASETS
from bcdiag.settings import get_settings


def _use_tracking_server() -> None:
    import mlflow

    mlflow.set_tracking_uri(get_settings().resolved_tracking_uri)


@click.command()
@click.argument("name")
@click.argument("version")
@click.option("--force", is_flag=True, help="Skip the quality gate (admins; audited).")
@click.option("--json", "as_json", is_flag=True)
def promote(name: str, version: str, force: bool, as_json: bool) -> None:
    """Move NAME's `champion` alias to VERSION if it passes the quality gate.

    Exits 0 when promoted, 1 when the gate rejects it.
    """
    from bcdiag.registry import promote as promote_version

    _use_tracking_server()
    decision = promote_version(name, version, force=force)
    if as_json:
        click.echo(json.dumps({"model": name, "version": version, **decision.__dict__}))
    else:
        state = "promoted" if decision.promoted else "not promoted"
        click.echo(f"{name} version {version} {state}: {decision.reason}")
    sys.exit(0 if decision.promoted else 1)


@click.command()
@click.option("--model", "model_name", default="bcdiag-us", show_default=True)
@click.option("--version", default="champion", show_default=True, help="Number or 'champion'.")
@click.option("--dataset", type=click.Choice(DATASETS), default="breastmnist", show_default=True)
@click.option("--experiment", default="bcdiag", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
def evaluate(
    model_name: str, version: str, dataset: str, experiment: str, data_dir: Path | None
) -> None:
    """Run notebooks/evaluate.ipynb (papermill) on a registered version; one MLflow run."""
    from bcdiag.notebook_runs import run_notebook

    folder = data_dir or get_settings().data_dir
    parameters = {
        "model_name": model_name,
        "version": version,
        "dataset": dataset,
        "data_dir": str(folder) if folder else None,
    }
    run_id = run_notebook(
        "evaluate", parameters, experiment=experiment, run_name=f"evaluate-{model_name}"
    )
    click.echo(f"evaluation run {run_id} finished (MLflow experiment {experiment!r})")
