"""What a retraining cycle trains and tests on, per modality.

- The **base data set** of the modality (`BASE_DATASETS`: rsna640 screening mammograms,
  busi256 ultrasound) with its **locked test set**: the set's own fixed test split, or
  the patients matching the ``locked_test_us`` / ``locked_test_mg`` settings (shell
  patterns over patient ids) when they are set: locked patients go to ``test`` and
  only there; other patients keep their split, except that an unlocked ``test`` patient
  moves to ``train``. Thresholds are chosen on ``valid``.
  A site with its own labelled scans sets ``base_folder_us`` / ``base_folder_mg`` (a
  `bcdiag.datasets.folder` folder with a split column): it replaces the public set,
  and its ``test`` rows are the locked test set.
- The **confirmed cases**: stored scans whose analyses clinicians confirmed,
  de-duplicated by sha256 (the newest confirmation wins), added to ``train`` only.
  bcdiag keeps no patient identifiers, so each is its own group; one that is a
  near-duplicate of a base ``valid`` or ``test`` image is dropped, so an upload of a
  test image can never leak into training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

from bcdiag.datasets import ImageSet, folder, near_duplicates_of_train
from bcdiag.datasets.catalog import load_dataset
from bcdiag.errors import BcdiagError, ConfigurationError, ScanRejected
from bcdiag.preprocess import prepare
from bcdiag.scans import read_scan
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage

BASE_DATASETS = {"US": "busi256", "MG": "rsna640"}


@dataclass(frozen=True)
class FeedbackCounts:
    """What became of the confirmed cases of one modality (logged as MLflow params)."""

    confirmed: int = 0
    duplicate_sha256: int = 0
    other_modality: int = 0
    unreadable: int = 0
    near_locked: int = 0
    used: int = 0


def base_folder(modality: str, settings: Settings) -> Path | None:
    """This site's own base folder for the modality, if one is configured."""
    if modality not in BASE_DATASETS:
        raise ConfigurationError(
            f"no base data set for modality {modality!r}; choose one of {', '.join(BASE_DATASETS)}"
        )
    return {"US": settings.base_folder_us, "MG": settings.base_folder_mg}[modality]


def base_dataset(modality: str, settings: Settings) -> str:
    """The name of the data set a modality's models start from (``folder`` for a site's own)."""
    return "folder" if base_folder(modality, settings) else BASE_DATASETS[modality]


def missing_base_data(modality: str, data_dir: Path | None, settings: Settings) -> str | None:
    """Why the modality cannot be retrained here, or None when its base data is present."""
    own = base_folder(modality, settings)
    if own is not None:
        labels = own / folder.LABELS_FILE
        return None if labels.is_file() else f"its base folder has no labels ({labels} is missing)"
    if data_dir is None:
        return "BCDIAG_DATA_DIR is not set, so there is no base data set"
    path = data_dir / BASE_DATASETS[modality] / folder.LABELS_FILE
    if not path.exists():
        return f"its base data set {BASE_DATASETS[modality]} is missing ({path} does not exist)"
    return None


def load_base(
    modality: str, data_dir: Path, image_size: int, settings: Settings, seed: int = 0
) -> ImageSet:
    """The modality's base set, prepared at `image_size`, with its locked test set as ``test``."""
    own = base_folder(modality, settings)
    if own is not None:
        return folder.load(own, image_size, seed, split_required=True)
    base = load_dataset(BASE_DATASETS[modality], data_dir, image_size, seed)
    return lock_test_split(base, locked_patterns(modality, settings))


def locked_patterns(modality: str, settings: Settings) -> list[str]:
    """The setting that fixes the modality's locked test set."""
    return {"US": settings.locked_test_us, "MG": settings.locked_test_mg}[modality]


def lock_test_split(images: ImageSet, patterns: list[str]) -> ImageSet:
    """`images` with exactly the patients matching `patterns` in ``test`` (no patterns:
    the set's own test split).

    Raises:
        ConfigurationError: the locked set has fewer than 2 cases of either class.
    """
    if patterns:
        locked = np.asarray([any(fnmatchcase(g, p) for p in patterns) for g in images.groups])
        split = np.where(locked, "test", np.where(images.split == "test", "train", images.split))
    else:
        locked, split = images.split == "test", images.split
    positives = int(images.y[locked].sum())
    if min(positives, int(locked.sum()) - positives) < 2:
        raise ConfigurationError(
            f"the locked test set of {images.name} ({patterns or 'its test split'}) has "
            f"{int(locked.sum())} images, {positives} malignant; it needs 2+ of each class"
        )
    return ImageSet(
        images.name, images.modality, images.x, images.y, images.ids, images.groups, split
    )


def locked_test_set(modality: str, data_dir: Path, image_size: int, settings: Settings) -> ImageSet:
    """The modality's locked test set, prepared at `image_size`."""
    return load_base(modality, data_dir, image_size, settings).part("test")


def confirmed_set(
    storage: Storage, modality: str, image_size: int
) -> tuple[ImageSet, FeedbackCounts]:
    """The scans of `modality` with confirmed outcomes, once per sha256, as ``train``."""
    cases = storage.confirmed_cases()
    newest = {case.scan_sha256: case for case in sorted(cases, key=lambda c: c.analysis_id)}
    scans = {scan.sha256: scan for scan in storage.list_scans()}
    xs, ys, ids = [], [], []
    other = unreadable = 0
    for sha256, case in newest.items():
        scan = scans[sha256]
        if scan.modality != modality:
            other += 1
            continue
        try:
            read = read_scan(storage.scan_bytes(scan), scan.filename, modality=modality)
        except ScanRejected:
            unreadable += 1  # stored under an older validation policy; counted, not trained on
            continue
        laterality = read.metadata.laterality
        xs.append(prepare(read.image, modality=modality, laterality=laterality, size=image_size))
        ys.append(case.malignant)
        ids.append(f"scan-{sha256[:16]}")
    images = ImageSet(
        "confirmed", modality,
        np.stack(xs) if xs else np.zeros((0, image_size, image_size), np.float32),
        np.asarray(ys, dtype=np.int64), ids, list(ids), np.asarray(["train"] * len(ids)),
    )  # fmt: skip
    counts = FeedbackCounts(
        confirmed=len(cases),
        duplicate_sha256=len(cases) - len(newest),
        other_modality=other,
        unreadable=unreadable,
        used=len(ids),
    )
    return images, counts


def retraining_set(
    locked: ImageSet, confirmed: ImageSet, counts: FeedbackCounts
) -> tuple[ImageSet, FeedbackCounts]:
    """The base set with its locked test split (`load_base`), plus the confirmed cases in
    ``train``."""
    held_out = locked.subset(locked.split != "train")
    near = _near_duplicates(held_out, confirmed)
    added = confirmed.subset(~near)
    counts = replace(counts, near_locked=int(near.sum()), used=len(added))
    merged = ImageSet(
        locked.name, locked.modality,
        np.concatenate([locked.x, added.x]), np.concatenate([locked.y, added.y]),
        locked.ids + added.ids, locked.groups + added.groups,
        np.concatenate([locked.split, added.split]),
    )  # fmt: skip
    return merged, counts


def _near_duplicates(reference: ImageSet, candidates: ImageSet) -> np.ndarray:
    """Which candidates lie within BreastMNIST's near-duplicate distance of a reference."""
    if len(candidates) == 0:
        return np.zeros(0, dtype=bool)
    if candidates.x.shape[1:] != reference.x.shape[1:]:
        raise BcdiagError("confirmed cases and base images were prepared at different sizes")
    # The same test as for BreastMNIST's train/test near-duplicates: reference as "train".
    ids = reference.ids + candidates.ids
    probe = ImageSet(
        "probe", reference.modality, np.concatenate([reference.x, candidates.x]),
        np.zeros(len(ids), dtype=np.int64), ids, ids,
        np.asarray(["train"] * len(reference) + ["test"] * len(candidates)),
    )  # fmt: skip
    return near_duplicates_of_train(probe)[len(reference) :]


def challenger_set(
    modality: str, data_dir: Path, image_size: int, seed: int, *, use_confirmed: bool = True
) -> tuple[ImageSet, dict[str, Any]]:
    """A challenger's images (base set + confirmed cases, `retraining_set`) and the MLflow
    params that describe them: data set, locked test size, confirmed-case counts.

    Args:
        use_confirmed: add the clinician-confirmed scans from storage to ``train``.
    """
    settings = get_settings()
    base = load_base(modality, data_dir, image_size, settings, seed)
    confirmed, counts = base.subset(np.zeros(len(base), dtype=bool)), FeedbackCounts()
    if use_confirmed:
        with Storage.from_settings(settings) as storage:
            confirmed, counts = confirmed_set(storage, modality, image_size)
    images, counts = retraining_set(base, confirmed, counts)
    params = {
        "dataset": base_dataset(modality, settings),
        "n_test_locked": int((images.split == "test").sum()),
        **{f"confirmed_{k}": v for k, v in asdict(counts).items()},
    }
    return images, params
