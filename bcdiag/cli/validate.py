"""``bcdiag validate``: judge scan files the way an upload is judged, one line per file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bcdiag.scans.files import iter_files, judge_file
from bcdiag.scans.rules import ACCEPTED_MODALITIES


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Write one JSON object per file.")
@click.option(
    "--modality",
    type=click.Choice(ACCEPTED_MODALITIES, case_sensitive=False),
    help="Modality of PNG/JPEG files (DICOM files carry their own).",
)
def validate(paths: tuple[Path, ...], as_json: bool, modality: str | None) -> None:
    """Check that each file (for folders: every file inside) is an acceptable scan.

    Exits 0 when every file is accepted, 1 when any is rejected or unreadable.
    """
    all_ok = True
    for path in iter_files(paths):
        verdict = judge_file(path, modality.upper() if modality else None)
        all_ok = all_ok and verdict.ok
        if as_json:
            click.echo(json.dumps(verdict.as_json()))
        else:
            status = "ok" if verdict.ok else f"REJECTED [{verdict.code}]"
            click.echo(f"{status} {verdict.message}")
    sys.exit(0 if all_ok else 1)
