"""A researcher-style folder of real mammograms with its labels.csv (`bcdiag.datasets.folder`)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

# (file under shared data, patient, split) of a researcher-style folder of real
# mammograms: mini-MIAS PNGs and CBIS-DDSM DICOMs, both classes in every split.
MAMMOGRAM_FOLDER = [
    *[(f"mias/png512/mdb{n:03d}.png", f"p{(n + 1) // 2:03d}", "train") for n in (1, 2, 3, 4)],
    *[(f"mias/png512/mdb{n:03d}.png", f"p{(n + 1) // 2:03d}", "train") for n in (23, 24, 27, 28)],
    *[
        (f"mias/png512/mdb{n:03d}.png", f"p{(n + 1) // 2:03d}", "valid")
        for n in (5, 6, 57, 58, 89, 90)
    ],
    *[(f"mias/png512/mdb{n:03d}.png", f"p{(n + 1) // 2:03d}", "test") for n in (7, 8, 71, 72)],
    ("dicom/derived/cbisddsm_Mass-Test_P_00173_LEFT_CC_benign_quarter.dcm", "P_00173", "test"),
    ("dicom/derived/cbisddsm_Mass-Test_P_00820_LEFT_CC_malignant_quarter.dcm", "P_00820", "test"),
]


def mammogram_folder(data_dir: Path, folder: Path, *, with_split: bool = True) -> Path:
    """Copy `MAMMOGRAM_FOLDER` into `folder` with a labels.csv, as a researcher would."""
    with (data_dir / "mias" / "labels.csv").open(newline="") as stream:
        mias = {row["png512"]: row["image_label"] for row in csv.DictReader(stream)}
    (folder / "films").mkdir(parents=True)
    rows = ["file,label,patient,modality" + (",split" if with_split else "")]
    for source, patient, split in MAMMOGRAM_FOLDER:
        name = Path(source).name
        shutil.copy(data_dir / source, folder / "films" / name)
        label = mias.get(source.removeprefix("mias/")) or name.split("_")[-2]
        rows.append(f"films/{name},{label},{patient},MG" + (f",{split}" if with_split else ""))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder
