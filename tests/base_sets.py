"""Copies of the base data sets (rsna640, busi256) for tests that train end to end.

`base_dir_copy` lays out a BCDIAG_DATA_DIR with some or all images of each class in each
split, taken in labels.csv order (splits kept), with their own labels.csv: the real
loaders, recipes, locked test sets and gate run on them, in seconds at `TINY_RECIPE`'s
size instead of the half hour the full MG recipe takes on 2 cores.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path

from bcdiag.datasets.catalog import EXCLUDED

TINY_RECIPE = {"image_size": 64, "epochs": 2, "members": 1, "batch_size": 8}
"""Recipe changes that make either base recipe train in seconds (BCDIAG_RETRAIN_RECIPE)."""


def base_dir_copy(
    data_dir: Path,
    target: Path,
    sets: Sequence[str] = ("rsna640", "busi256"),
    *,
    per_split_and_class: int | None = 6,
    invert_labels: bool = False,
) -> Path:
    """A BCDIAG_DATA_DIR at `target` holding copies of `sets` from `data_dir`.

    Args:
        per_split_and_class: patients kept per split and class (None: all).
        invert_labels: swap malignant and not-malignant in ``train`` and ``valid`` (the
            test split, the locked test set, keeps its true labels).
    """
    for name in sets:
        source, folder = data_dir / name, target / name
        (folder / "images").mkdir(parents=True)
        with (source / "labels.csv").open(newline="") as stream:
            reader = csv.DictReader(stream)
            fields, rows = list(reader.fieldnames or ()), list(reader)
        taken: dict[tuple[str, bool], set[str]] = {}
        kept = []
        for row in rows:
            if row["file"] in EXCLUDED.get(name, {}):
                continue
            malignant = row["label"] == "malignant"
            patients = taken.setdefault((row["split"], malignant), set())
            patient = row.get("patient") or row["file"]
            full = per_split_and_class is not None and len(patients) >= per_split_and_class
            if patient not in patients and full:
                continue
            patients.add(patient)
            if invert_labels and row["split"] != "test":
                row = row | {"label": "normal" if malignant else "malignant"}
            kept.append(row)
            shutil.copy(source / row["file"], folder / row["file"])
        with (folder / "labels.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
    return target
