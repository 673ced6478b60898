"""``bcdiag predict``: score scan files with the champion models, one line per file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from bcdiag.scans.rules import ACCEPTED_MODALITIES


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Write one JSON object per file.")
@click.option(
    "--heatmap",
    "heatmap_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a Grad-CAM overlay <DIR>/<file stem>_heatmap.png for each scored file.",
)
@click.option(
    "--modality",
    type=click.Choice(ACCEPTED_MODALITIES, case_sensitive=False),
    help="Modality of PNG/JPEG files (DICOM files carry their own).",
)
def predict(
    paths: tuple[Path, ...], as_json: bool, heatmap_dir: Path | None, modality: str | None
) -> None:
    """Score each file (folders: every file inside; .zip/.tar/.tar.gz: unpacked) with the
    champion model of its modality; many files are scored on Dask, in completion order.

    probability_malignant is calibrated to the model's training set, whose share of
    malignant images is training_prevalence (null: not recorded). Where
    BCDIAG_PREVALENCE_MG / _US is set, each result also gives site_prevalence and
    probability_at_site_prevalence (null when the model did not record its training
    prevalence); the call stays at the validated threshold.

    Exits 0 when every file was scored, 1 when any was rejected or had no model.
    """
    from bcdiag.serving.batch import score_files  # torch, dask, mlflow: load on use

    all_ok = True
    for result in score_files(
        paths, heatmap_dir=heatmap_dir, modality=modality.upper() if modality else None
    ):
        all_ok = all_ok and result["ok"]
        click.echo(json.dumps(result) if as_json else _line(result))
    sys.exit(0 if all_ok else 1)


def _line(result: dict[str, Any]) -> str:
    if not result["ok"]:
        return f"REJECTED [{result['code']}] {result['message']}"
    model = result["model"]
    at_site = result.get("probability_at_site_prevalence")
    site = (
        ""
        if at_site is None
        else f", {at_site:.4f} at site prevalence {result['site_prevalence']:g}"
    )
    text = (
        f"{result['call']}: probability_malignant {result['probability_malignant']:.3f} "
        f"(threshold {result['threshold']:.3f}){site}, {model['name']} version "
        f"{model['version']} sha256 {model['sha256'][:12]}, {result['file']}"
    )
    return f"{text}, heatmap {result['heatmap']}" if "heatmap" in result else text
