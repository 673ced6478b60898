"""``bcdiag promote``, ``rollback``, ``retrain`` and ``evaluate``: registered models.

Forced promotions, rollbacks and retraining decisions are audited with the operating
system user who ran the command.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from bcdiag.datasets.catalog import DATASETS
from bcdiag.platform.audit import acting_user
from bcdiag.settings import get_settings
from bcdiag.storage import Storage


def _use_tracking_server() -> None:
    import mlflow  # 1 s, 120 MB: not for `bcdiag --help`

    mlflow.set_tracking_uri(get_settings().resolved_tracking_uri)


@click.command()
@click.argument("name")
@click.argument("version")
@click.option("--force", is_flag=True, help="Skip the quality gate (admins; audited).")
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Default: BCDIAG_DATA_DIR."
)
@click.option("--json", "as_json", is_flag=True)
def promote(name: str, version: str, force: bool, data_dir: Path | None, as_json: bool) -> None:
    """Move NAME's `champion` alias to VERSION if it passes the retraining gate.

    The gate (`bcdiag.lifecycle.gate`) compares VERSION with the champion on the locked test
    set; its decision goes to VERSION's MLflow run and the audit trail. Exits 0
    when promoted, 1 when rejected.
    """
    from bcdiag.lifecycle.gate import PROMOTED, promote_if_passes  # torch, mlflow: on use
    from bcdiag.models.champion_trail import force_champion

    _use_tracking_server()
    settings = get_settings()
    user = acting_user()
    with Storage.from_settings(settings) as storage:  # audited: open the trail before any move
        if force:
            force_champion(name, version, storage=storage, user=user)
            reason = "forced: the gate was skipped"
            result = {"promoted": True, "decision": PROMOTED, "reason": reason}
        else:
            folder = settings.required_data_dir(data_dir)
            decision = promote_if_passes(
                name, version, data_dir=folder, settings=settings, storage=storage, user=user
            )
            result = {**decision.as_json(), "promoted": decision.promoted}
    if as_json:
        click.echo(json.dumps({"model": name, "version": version, **result}))
    else:
        state = "promoted" if result["promoted"] else "not promoted"
        click.echo(f"{name} version {version} {state}: {result['reason']}")
    sys.exit(0 if result["promoted"] else 1)


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def rollback(name: str, as_json: bool) -> None:
    """Give NAME's `champion` alias back to its `previous-champion` (audited)."""
    from bcdiag.models.champion_trail import roll_back_champion  # torch, mlflow: on use

    _use_tracking_server()
    with Storage.from_settings() as storage:
        restored, withdrawn = roll_back_champion(name, storage=storage, user=acting_user())
    if as_json:
        click.echo(json.dumps({"model": name, "champion": restored, "withdrawn": withdrawn}))
    else:
        click.echo(f"{name}: champion is version {restored} again (version {withdrawn} withdrawn)")


@click.command()
@click.option("--now", is_flag=True, help="Run one cycle now.")
@click.option("--schedule", is_flag=True, help="Run cycles on BCDIAG_RETRAIN_CRON until stopped.")
@click.option(
    "--modality", "modalities", multiple=True, type=click.Choice(["US", "MG"]),
    help="Repeatable; default: BCDIAG_RETRAIN_MODALITIES.",
)  # fmt: skip
@click.option("--epochs", type=int, help="Override the recipe's epochs per member.")
@click.option("--members", type=int, help="Override the recipe's ensemble members.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Default: BCDIAG_DATA_DIR."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per modality.")
def retrain(
    now: bool,
    schedule: bool,
    modalities: tuple[str, ...],
    epochs: int | None,
    members: int | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Retrain each modality's challenger, gate it and move `champion` if it passes.

    Exits 1 if a modality's cycle failed (its champion is untouched) or another
    cycle is running.
    """
    if now == schedule:
        raise click.UsageError("give exactly one of --now and --schedule")
    _use_tracking_server()
    if schedule:
        from bcdiag.lifecycle.scheduler import serve  # torch, mlflow, papermill: on use

        sys.exit(serve(get_settings()))
    from bcdiag.lifecycle.retrain import FAILED, run_cycle  # torch, mlflow, papermill: on use

    with contextlib.redirect_stdout(sys.stderr):  # progress output never mixes with --json
        outcomes = run_cycle(
            modalities=modalities or None,
            overrides={"epochs": epochs, "members": members},
            data_dir=data_dir,
            user=acting_user(),
        )
    for outcome in outcomes:
        if as_json:
            click.echo(json.dumps(outcome.as_json()))
        else:
            click.echo(f"{outcome.model}: {outcome.decision} — {outcome.reason}")
    sys.exit(1 if any(o.decision == FAILED for o in outcomes) else 0)


@click.command()
@click.option("--model", "model_name", default="bcdiag-us", show_default=True)
@click.option("--version", default="champion", show_default=True, help="Number or 'champion'.")
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    help="Default: the set the version was trained on (another set: external validation).",
)
@click.option("--experiment", default="bcdiag", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
def evaluate(
    model_name: str, version: str, dataset: str | None, experiment: str, data_dir: Path | None
) -> None:
    """Run notebooks/evaluate.ipynb (papermill) on a registered version; one MLflow run."""
    from bcdiag.lifecycle.notebook_runs import run_notebook  # mlflow, papermill: on use

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
