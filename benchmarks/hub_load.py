"""Load on the platform: N clinicians sign in through the hub at once and each upload a
scan in the clinician app; sign-in → app and upload → result card, p50/p95, errors,
and the app's memory per clinician session (Voilà and its kernels, RSS).

Starts `bcdiag run` on free ports with a throwaway home (as `make run`: the inference
service, preheated kernels), registers the ultrasound recipe's network (EfficientNet-Lite0
at 224 px, ImageNet weights: latency, not quality) as the ultrasound champion,
creates the clinicians with `bcdiag users add`, and drives one Chromium with one
browser context (own cookies) per clinician through Playwright.

    .venv/bin/python benchmarks/hub_load.py [--clinicians 5 10 20] [--pool 20] [--shots DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import psutil
from app_latency import recipe_network, register
from PIL import Image
from playwright.async_api import Browser, async_playwright

from bcdiag.processes import free_port
from bcdiag.settings import Settings, get_settings
from bcdiag.storage import Storage

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PASSWORD = "load test password 1"


@dataclass(frozen=True)
class Session:
    """One clinician's timings (seconds) or the error that stopped it."""

    sign_in_s: float = 0.0
    upload_s: float = 0.0
    error: str = ""


def percentiles(values: list[float]) -> str:
    if not values:
        return "no successful sessions"
    p95 = statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]
    return f"p50 {statistics.median(values):6.1f} s, p95 {p95:6.1f} s"


def start_platform(
    home: Path, max_kernels: int, pool: int
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """`bcdiag run` on free ports; returns the process and its environment."""
    names = ("PORT", "HUB_API_PORT", "PROXY_API_PORT", "APP_PORT", "APP_PROXY_PORT",
             "MLFLOW_PORT", "MLFLOW_PROXY_PORT", "SCHEDULER_PORT", "SCORING_PORT")  # fmt: skip
    env = {
        **os.environ,
        **{f"BCDIAG_{name}": str(free_port()) for name in names},
        "BCDIAG_HOME": str(home),
        "BCDIAG_ADMIN_PASSWORD": PASSWORD,
        "BCDIAG_APP_MAX_KERNELS": str(max_kernels),
        "BCDIAG_APP_POOL_SIZE": str(pool),
        "BCDIAG_TRAIN_ON_FIRST_START": "false",  # the benchmark registers its own champion
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BCDIAG_DATABASE_URL", "BCDIAG_STORAGE_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    log = (home.parent / "run.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "bcdiag", "run"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 300
    while "bcdiag is running" not in (home.parent / "run.log").read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"bcdiag run did not start; see {home.parent / 'run.log'}")
        time.sleep(1)
    return process, env


def wait_for_pool(app_port: str, size: int, timeout_s: float = 600) -> None:
    """Wait until Voilà holds `size` kernels and all are idle: the preheated pool is full
    (after a round, the pages' kernels have been shut down and the pool refilled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            kernels = [p for p in app_processes(app_port) if "ipykernel_launcher" in p.cmdline()]
            for kernel in kernels:
                kernel.cpu_percent(interval=None)  # the first call starts the measurement
            time.sleep(2)
            busy = sum(kernel.cpu_percent(interval=None) for kernel in kernels)
        except psutil.NoSuchProcess:
            continue  # a kernel ended meanwhile: look again
        if len(kernels) == size and busy < 5:
            return
    sys.exit(f"the app's kernel pool did not settle at {size} idle kernels in {timeout_s:.0f} s")


def register_champion(mlflow_url: str, home: Path) -> None:
    """The US recipe's network as the US champion, promoted as ``bcdiag promote --force``
    does, in the platform's audit trail under `home`."""
    mlflow.set_tracking_uri(mlflow_url)
    with Storage.from_settings(Settings(home=home)) as storage:
        register(recipe_network("busi256", "US"), storage)


def add_clinicians(env: dict[str, str], names: list[str]) -> None:
    for name in names:
        subprocess.run(
            [sys.executable, "-m", "bcdiag", "users", "add", name, "--group", "clinicians"],
            input=PASSWORD + "\n", env=env, text=True, check=True, capture_output=True,
        )  # fmt: skip


def ultrasound_png() -> bytes:
    """A BreastMNIST test image as the PNG a clinician would upload."""
    with np.load(get_settings().required_data_dir() / "breastmnist" / "breastmnist.npz") as npz:
        buffer = io.BytesIO()
        Image.fromarray(npz["test_images"][0]).save(buffer, format="PNG")
    return buffer.getvalue()


def app_processes(app_port: str) -> list[psutil.Process]:
    """The Voilà process listening on `app_port` and all its kernels (and their workers)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "voila" in cmdline and f"--port={app_port}" in cmdline:
            return [process, *process.children(recursive=True)]
    return []


def app_rss_bytes(app_port: str) -> int:
    """RSS of the Voilà process listening on `app_port` and all its kernels."""
    return sum(p.memory_info().rss for p in app_processes(app_port) if p.is_running())


def service_rss_bytes() -> int:
    """RSS of the inference service: its driver and the Ray cluster below it."""
    for process in psutil.process_iter(["cmdline"]):
        if "bcdiag.serving.service" in (process.info["cmdline"] or []):
            tree = [process, *process.children(recursive=True)]
            return sum(p.memory_info().rss for p in tree if p.is_running())
    return 0


TIMEOUT_MS = 600_000  # per step; --timeout-s
SHOTS: Path | None = None  # --shots: a failed session's page is saved here


async def clinician(browser: Browser, url: str, name: str, scan: Path) -> Session:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    stage = "sign-in"
    try:
        started = time.monotonic()
        await page.goto(f"{url}/hub/login", timeout=TIMEOUT_MS)
        await page.fill("#username_input", name)
        await page.fill("#password_input", PASSWORD)
        await page.click("#login_submit")
        await page.get_by_text("Signed in as").wait_for(timeout=TIMEOUT_MS)
        signed_in = time.monotonic()
        stage = "upload"
        async with page.expect_file_chooser() as chooser:
            await page.locator("button.widget-upload").click()
        await (await chooser.value).set_files(str(scan))
        # a PNG's kind of scan has no default: the clinician states it
        await page.get_by_role("button", name="Ultrasound", exact=True).click()
        await page.get_by_placeholder("Case (patient) for PNG/JPEG files").fill(name)
        await page.get_by_role("button", name="Analyse").click(timeout=TIMEOUT_MS)
        # the card, or the run's summary line when the file ended as a message instead
        await page.get_by_text(re.compile("Probability of malignancy|not analysed")).first.wait_for(
            timeout=TIMEOUT_MS
        )
        if not await page.get_by_text("Probability of malignancy").count():
            message = await page.locator(".bcdiag-rejected").first.inner_text()
            return Session(error=f"upload: no card: {message.splitlines()[0]}")
        return Session(signed_in - started, time.monotonic() - signed_in)
    except Exception as error:  # noqa: BLE001 - a benchmark counts failures, it does not stop
        if SHOTS is not None:
            await page.screenshot(path=SHOTS / f"{name}-{stage}.png")
        return Session(error=f"{stage}: {type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        await context.close()


async def round_of(url: str, names: list[str], scan: Path, app_port: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        before = app_rss_bytes(app_port)
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, app_rss_bytes(app_port))
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        sessions = await asyncio.gather(*(clinician(browser, url, n, scan) for n in names))
        wall = time.monotonic() - started
        sampler.cancel()
        await browser.close()
    ok = [s for s in sessions if not s.error]
    per_session = (peak - before) / len(names) / 2**20
    print(f"N={len(names):3d}  sign-in → app: {percentiles([s.sign_in_s for s in ok])}   "
          f"upload → card: {percentiles([s.upload_s for s in ok])}   "
          f"errors {len(sessions) - len(ok)}/{len(names)}   wall {wall:5.1f} s   "
          f"app memory +{per_session:.0f} MiB per session (peak {peak / 2**30:.1f} GiB); "
          f"inference service {service_rss_bytes() / 2**30:.1f} GiB",
          flush=True)  # fmt: skip
    for failed in {s.error for s in sessions if s.error}:
        print(f"       error: {failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clinicians", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--pool", type=int, help="preheated app kernels (BCDIAG_APP_POOL_SIZE)")
    parser.add_argument("--timeout-s", type=float, default=600, help="limit of each step")
    parser.add_argument("--shots", type=Path, help="save a failed session's page here")
    args = parser.parse_args()
    global TIMEOUT_MS, SHOTS
    TIMEOUT_MS, SHOTS = int(args.timeout_s * 1000), args.shots
    with tempfile.TemporaryDirectory(prefix="bcdiag-hub-load-") as tmp:
        home = Path(tmp) / "home"
        # room for every page, the refilling pool, and a few more
        pool = get_settings().app_pool_size if args.pool is None else args.pool
        process, env = start_platform(home, max(args.clinicians) + pool + 5, pool)
        try:
            register_champion(f"http://127.0.0.1:{env['BCDIAG_MLFLOW_PORT']}", home)
            names = [f"dr-load-{i:02d}" for i in range(max(args.clinicians))]
            add_clinicians(env, names)
            scan = Path(tmp) / "lesion.png"
            scan.write_bytes(ultrasound_png())
            url = f"http://127.0.0.1:{env['BCDIAG_PORT']}"
            print(f"{os.cpu_count()} CPUs; one Voilà, pool {pool}",
                  flush=True)  # fmt: skip
            for count in args.clinicians:
                wait_for_pool(env["BCDIAG_APP_PORT"], pool)
                asyncio.run(round_of(url, names[:count], scan, env["BCDIAG_APP_PORT"]))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)


if __name__ == "__main__":
    main()
