"""``bcdiag export``: write every stored scan, de-identified, to a folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bcdiag.errors import BcdiagError
from bcdiag.platform.users import acting_user
from bcdiag.storage import Storage
from bcdiag.storage.export import count, export_deidentified


@click.command()
@click.option(
    "--deidentify",
    is_flag=True,
    help="Required: de-identify DICOM headers and withhold scans that may show text.",
)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def export(deidentify: bool, out: Path) -> None:
    """Export every stored scan to the new folder OUT, with a manifest.csv."""
    if not deidentify:
        raise click.UsageError("bcdiag never exports identified data: pass --deidentify")
    try:
        with Storage.from_settings() as storage:
            results = export_deidentified(storage, out, user=acting_user())
    except BcdiagError as exc:
        raise click.ClickException(str(exc)) from exc
    for result in results:
        if result.status != "exported":
            click.echo(f"{result.status}: scan {result.sha256[:12]}: {result.reason}", err=True)
    failed = count(results, "failed")
    click.echo(
        f"exported {count(results, 'exported')} of {len(results)} scans to {out} "
        f"({count(results, 'withheld')} withheld, {failed} failed); see {out / 'manifest.csv'}"
    )
    if failed:
        sys.exit(1)
