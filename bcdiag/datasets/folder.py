"""A researcher's own scans: a folder of DICOM / PNG / JPEG files and a ``labels.csv``.

``<folder>/labels.csv`` has one row per image:

- ``file``: path relative to the folder (it must stay inside it);
- ``label``: ``malignant`` or ``1``; ``benign``, ``normal`` or ``0``;
- ``patient`` (optional): images of one patient always share a split; default: the file;
- ``split`` (optional): ``train`` / ``valid`` / ``test`` for every row, else a seeded
  60/20/20 split by patient;
- ``modality`` (optional): ``MG`` or ``US``, needed for PNG/JPEG (a DICOM header wins);
- ``laterality`` (optional): ``L`` or ``R`` for PNG/JPEG mammograms.

Every file goes through the app's intake (`bcdiag.scans.judge_file`) and
`bcdiag.preprocess.prepare`. One unusable file or row stops the load with a message
naming each of them: dropping files silently would change what the model is
evaluated on. All images must be of one modality (one model per modality).
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from pathlib import Path

import numpy as np

from bcdiag.datasets import SPLITS, ImageSet, patient_splits
from bcdiag.errors import BcdiagError
from bcdiag.preprocess import prepare
from bcdiag.scans.files import judge_file

LABELS_FILE = "labels.csv"
LABELS = {"malignant": 1, "1": 1, "benign": 0, "normal": 0, "0": 0}
MAX_LISTED = 20


class FolderDataError(BcdiagError):
    """The folder's labels or files cannot make a data set; the message lists why."""


def load(
    folder: Path,
    image_size: int,
    seed: int = 0,
    *,
    split_required: bool = False,
    excluded: Collection[str] = (),
) -> ImageSet:
    """Every labelled image of `folder`, prepared at `image_size`, split by patient.

    Args:
        split_required: refuse a labels.csv without a split column (a locked test set
            must not move when images are added).
        excluded: ``file`` values left out on purpose (known-unusable images of a public
            set, listed with their reasons where the set is declared).
    """
    rows = [(line, row) for line, row in _read_labels(folder) if row["file"] not in excluded]
    problems: list[str] = []
    xs, ys, ids, groups, splits, modalities = [], [], [], [], [], set()
    for line, row in rows:
        name = row["file"].strip()
        path = (folder / name).resolve()
        label = LABELS.get(row["label"].strip().lower())
        if not path.is_relative_to(folder.resolve()):
            problems.append(f"line {line}: {name} is outside {folder}")
            continue
        if label is None:
            problems.append(f"line {line}: label {row['label']!r} is not one of {sorted(LABELS)}")
            continue
        verdict = judge_file(path, modality=_cell(row, "modality") or None)
        if verdict.scan is None:
            problems.append(f"line {line}: {verdict.message}")
            continue
        metadata = verdict.scan.metadata
        laterality = metadata.laterality or _cell(row, "laterality").upper() or None
        xs.append(
            prepare(
                verdict.scan.image,
                modality=metadata.modality,
                laterality=laterality,
                size=image_size,
            )
        )
        modalities.add(metadata.modality)
        ys.append(label)
        ids.append(name)
        groups.append(_cell(row, "patient") or name)
        splits.append(_cell(row, "split").lower())
    if len(modalities) > 1:
        problems.append(f"the images mix modalities {sorted(map(str, modalities))}; use one")
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  … and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise FolderDataError(
            f"{folder / LABELS_FILE}: {len(problems)} problem(s):\n  {listed}{more}"
        )
    (modality,) = modalities
    return ImageSet(
        folder.name,
        str(modality),
        np.stack(xs),
        np.asarray(ys, dtype=np.int64),
        ids,
        groups,
        np.asarray(_splits(splits, groups, seed, required=split_required)),
    )


def _cell(row: dict[str, str], column: str) -> str:
    """A row's value in an optional column, stripped; "" when the column or value is absent."""
    return (row.get(column) or "").strip()


def _read_labels(folder: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of ``labels.csv`` with their line numbers; the columns checked."""
    labels = folder / LABELS_FILE
    if not labels.is_file():
        raise FolderDataError(
            f"{labels} is missing: list each image as file,label[,patient,split,modality,"
            "laterality] (see bcdiag/datasets/folder.py)"
        )
    with labels.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        missing = {"file", "label"} - set(reader.fieldnames or ())
        if missing:
            raise FolderDataError(f"{labels} lacks the column(s) {', '.join(sorted(missing))}")
        rows = [(reader.line_num, dict(row)) for row in reader]
    if not rows:
        raise FolderDataError(f"{labels} lists no images")
    return rows


def _splits(given: list[str], groups: list[str], seed: int, *, required: bool) -> list[str]:
    """The ``split`` column when every row has one, else a seeded split by patient."""
    if not any(given):
        if required:
            raise FolderDataError(
                "labels.csv needs a split column (train / valid / test on every row): its "
                "test rows are the locked test set, which must stay fixed"
            )
        assignment = patient_splits(groups, seed)
        return [assignment[g] for g in groups]
    if not all(s in SPLITS for s in given):
        raise FolderDataError(f"the split column must say {', '.join(SPLITS)} on every row")
    seen: dict[str, set[str]] = {}
    for group, split in zip(groups, given, strict=True):
        seen.setdefault(group, set()).add(split)
    mixed = {group for group, found in seen.items() if len(found) > 1}
    if mixed:
        raise FolderDataError(f"patient(s) {', '.join(sorted(mixed))} appear in two splits")
    return given
