"""``bcdiag export``: write every stored scan, de-identified, to a folder, or grant it to
a researcher (into their home, owned by their OS account)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click

from bcdiag.errors import BcdiagError
from bcdiag.platform.audit import acting_user
from bcdiag.platform.researchers import EXPORTS, find_os_account, grant_folder, move_as
from bcdiag.storage import Storage
from bcdiag.storage.export import ExportedScan, count, export_deidentified


def _granted(storage: Storage, researcher: str, name: str) -> tuple[Path, list[ExportedScan]]:
    """Export into researcher's ``~/exports/NAME``: staged beside their home, handed to
    their account, then moved in by that account (root never writes inside a home)."""
    account = find_os_account(researcher)
    if account is None:
        raise click.ClickException(f"{researcher!r} has no researcher OS account")
    if "/" in name or name in ("", ".", ".."):
        raise click.UsageError("with --grant, OUT is a folder name inside ~/exports")
    final = account.home / EXPORTS / name
    if final.exists():
        raise click.ClickException(f"{final} exists already: choose another name")
    staging = Path(tempfile.mkdtemp(prefix=".bcdiag-export-", dir=account.home.parent))
    try:
        results = export_deidentified(storage, staging / name, user=acting_user())
        grant_folder(account, staging)
        move_as(account, staging / name, final)
    finally:
        shutil.rmtree(staging)
    storage.record_audit(
        user=acting_user(),
        action="scans.granted",
        target=f"user:{researcher}",
        details={"folder": str(final), "exported": count(results, "exported")},
    )
    return final, results


@click.command()
@click.option(
    "--deidentify",
    is_flag=True,
    help="Required: de-identify DICOM headers and withhold scans that may show text.",
)
@click.option(
    "--grant",
    "researcher",
    metavar="RESEARCHER",
    help="Give the export to this researcher: OUT is then a folder name in their ~/exports.",
)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def export(deidentify: bool, researcher: str | None, out: Path) -> None:
    """Export every stored scan to the new folder OUT, with a manifest.csv."""
    if not deidentify:
        raise click.UsageError("bcdiag never exports identified data: pass --deidentify")
    try:
        with Storage.from_settings() as storage:
            if researcher:
                out, results = _granted(storage, researcher, str(out))
            else:
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
