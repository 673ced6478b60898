"""Clinician-app latency in a real browser: first page load, and upload → visible
result card with heatmap, over repeated uploads (p50/p95).

Starts its own MLflow server and Voilà on free ports with a throwaway home,
trains and promotes a small BreastMNIST model (the latency does not depend on
its quality), and drives Debian's Chromium with Playwright.

    .venv/bin/python benchmarks/app_latency.py [--uploads 20]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

from bcdiag.datasets.breastmnist import load
from bcdiag.registry import log_bundle, promote
from bcdiag.services import free_port, mlflow_service, start, stop
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import upgrade
from bcdiag.train import TrainConfig, train_bundle

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def percentiles(values: list[float]) -> str:
    p95 = statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]
    return f"p50 {statistics.median(values):.2f} s, p95 {p95:.2f} s (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=20)
    args = parser.parse_args()
    data_dir = get_settings().required_data_dir()
    home = Path(tempfile.mkdtemp(prefix="bcdiag-latency-"))
    server = mlflow_service(Settings(home=home, mlflow_port=free_port()))
    processes = [start(server)]
    try:
        mlflow.set_tracking_uri(server.public_url)
        images = load(data_dir)
        with mlflow.start_run():
            mlflow.log_metric("valid_auc", 0.5)
            log_bundle(train_bundle(images, TrainConfig(epochs=2, members=1)))
        promote("bcdiag-us", "1")
        upgrade(f"sqlite:///{home / 'bcdiag.sqlite'}")
        port = free_port()
        env = {**os.environ, "BCDIAG_HOME": str(home), "MLFLOW_TRACKING_URI": server.public_url}
        notebook = get_settings().notebooks_dir / "app.ipynb"
        voila = subprocess.Popen(
            [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}",
             "--Voila.ip=127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(voila)
        url = f"http://127.0.0.1:{port}/"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        pngs = []
        with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
            for index, pixels in enumerate(npz["test_images"][: args.uploads]):
                path = home / f"us_{index}.png"
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                path.write_bytes(buffer.getvalue())
                pngs.append(path)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page()
            began = time.perf_counter()
            page.goto(url, timeout=60_000)
            page.get_by_text("Signed in as").wait_for(timeout=60_000)
            first_page = time.perf_counter() - began
            latencies = []
            for path in pngs:
                with page.expect_file_chooser() as chooser:
                    page.locator("button.widget-upload").click()
                chooser.value.set_files(str(path))
                began = time.perf_counter()
                page.get_by_role("button", name="Analyse").click()
                # the card's title (the hidden history tab also names the file)
                page.locator("h4", has_text=path.name).wait_for(timeout=60_000)
                latencies.append(time.perf_counter() - began)
            browser.close()
        print(f"machine: {os.cpu_count()} CPU cores; Voilà without preheated kernels")
        print(f"first page load (kernel start + app build): {first_page:.2f} s")
        print(f"ultrasound PNG upload → result card with heatmap: {percentiles(latencies)}")
    finally:
        stop(processes)


if __name__ == "__main__":
    main()
