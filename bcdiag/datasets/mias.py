"""mini-MIAS: 322 digitised film mammograms (MLO), 161 patients, split by patient.

Image label: malignant if any finding is malignant (``image_label`` column of
the shared ``labels.csv``), else 0 (benign or normal). Splits are made by
patient, never by image: both breasts of a patient land in the same split.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bcdiag.datasets import ImageSet, patient_splits
from bcdiag.errors import BcdiagError
from bcdiag.preprocess import prepare
from bcdiag.scans import read_scan


def load(data_dir: Path, image_size: int = 224, seed: int = 0) -> ImageSet:
    """All 322 images, prepared at `image_size`, with a seeded patient-level split."""
    root = data_dir / "mias"
    labels = root / "labels.csv"
    if not labels.exists():
        raise BcdiagError(f"{labels} is missing; mini-MIAS must be placed under {root}")
    images: dict[str, tuple[str, int, str]] = {}
    with labels.open(newline="") as stream:
        for row in csv.DictReader(stream):
            malignant = int(row["image_label"] == "malignant")
            images[row["refnum"]] = (row["patient"], malignant, row["png512"])
    assignment = patient_splits([patient for patient, _, _ in images.values()], seed)
    xs, ys, ids, groups = [], [], [], []
    for refnum, (patient, malignant, relative) in sorted(images.items()):
        scan = read_scan((root / relative).read_bytes(), relative, modality="MG")
        laterality = "R" if int(refnum[3:]) % 2 else "L"  # odd numbers are right breasts
        xs.append(prepare(scan.image, modality="MG", laterality=laterality, size=image_size))
        ys.append(malignant)
        ids.append(refnum)
        groups.append(patient)
    split = np.asarray([assignment[g] for g in groups])
    return ImageSet("mias", "MG", np.stack(xs), np.asarray(ys, dtype=np.int64), ids, groups, split)
