"""The platform as `make run` starts it: real JupyterHub, proxy, services, accounts.

One `bcdiag run` for the module (``platform``); a clinician and a researcher are
added with `bcdiag users add` while it runs, the admin comes from
``BCDIAG_ADMIN_USER`` / ``BCDIAG_ADMIN_PASSWORD``. The access matrix probes every
role on every route below; `test_every_hub_route_has_an_expected_outcome` fails
when JupyterHub, the authenticator or the proxy grows a route this file does not judge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import requests
from lab_client import LabClient
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_app_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _upload
from test_inference import register

from bcdiag.models.bundle import ModelBundle
from bcdiag.platform.researchers import find_os_account, remove_os_account
from bcdiag.processes import free_port
from bcdiag.settings import Settings
from bcdiag.storage import Storage

CLINICIAN, RESEARCHER, ADMIN = "dr-alice", "rob", "admin"
APP_PATH = "services/bcdiag-app/"
SECOND_CLINICIAN = "dr-bea"
PASSWORDS = {
    CLINICIAN: "horse battery staple 1",
    SECOND_CLINICIAN: "horse battery staple 3",
    RESEARCHER: "horse battery staple 2",
    ADMIN: "horse battery staple 0",
}
START_TIMEOUT_S = 240  # hub + proxy + MLflow on a loaded 2-core machine
LOCKOUT_S = 20
ROLES = ("anonymous", "clinician", "researcher", "admin")


@dataclass(frozen=True)
class Platform:
    """A running `bcdiag run`: its front door, ports and log."""

    url: str
    env: dict[str, str]
    log: Path
    proxy_token: str


def _wait_for(log: Path, process: subprocess.Popen[bytes], text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"no {text!r} within {timeout_s} s: {log.read_text(errors='replace')[-4000:]}")


def users_cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`bcdiag users ARGS` beside the running hub, as an admin runs it."""
    return subprocess.run(
        [sys.executable, "-m", "bcdiag", "users", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def add_user(env: dict[str, str], name: str, group: str) -> str:
    """`bcdiag users add` with the password on stdin; its output."""
    password = PASSWORDS.get(name, "horse battery staple 9")
    done = users_cli(env, "add", name, "--group", group, stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    """`bcdiag run` on free ports with a fresh BCDIAG_HOME, and one account per group.

    Everything lies in a folder every account may enter (pytest's own are closed to other
    accounts), so that what keeps a researcher out is bcdiag's doing.
    """
    root = Path(tempfile.mkdtemp(prefix="bcdiag-platform-"))
    root.chmod(0o755)
    port = free_port()
    proxy_token = os.urandom(16).hex()
    env = {
        **os.environ,
        "BCDIAG_HOME": str(root / "home"),
        "BCDIAG_RESEARCHER_HOMES": str(root / "homes"),
        "BCDIAG_PORT": str(port),
        "BCDIAG_HUB_API_PORT": str(free_port()),
        "BCDIAG_PROXY_API_PORT": str(free_port()),
        "BCDIAG_APP_PORT": str(free_port()),
        "BCDIAG_APP_PROXY_PORT": str(free_port()),
        "BCDIAG_MLFLOW_PORT": str(free_port()),
        "BCDIAG_MLFLOW_PROXY_PORT": str(free_port()),
        "BCDIAG_SCHEDULER_PORT": str(free_port()),
        "BCDIAG_SCORING_PORT": str(free_port()),
        "BCDIAG_ADMIN_USER": ADMIN,
        "BCDIAG_ADMIN_PASSWORD": PASSWORDS[ADMIN],
        "BCDIAG_APP_POOL_SIZE": "1",  # as `make run`: pages take preheated kernels
        "BCDIAG_APP_MAX_KERNELS": "30",  # pages fetched without a browser never close theirs
        "BCDIAG_TRAIN_ON_FIRST_START": "false",  # first start: tests/test_scheduler.py
        "BCDIAG_LOCKOUT_SECONDS": str(LOCKOUT_S),  # short, so the test sees a lockout end
        "CONFIGPROXY_AUTH_TOKEN": proxy_token,  # lets the route-list test read the proxy table
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BCDIAG_DATABASE_URL", "BCDIAG_STORAGE_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    log = root / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bcdiag", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for(log, process, "bcdiag is running", START_TIMEOUT_S)
        assert "via the hub API" in add_user(env, CLINICIAN, "clinicians")
        add_user(env, RESEARCHER, "researchers")
        add_user(env, SECOND_CLINICIAN, "clinicians")
        yield Platform(f"http://127.0.0.1:{port}", env, log, proxy_token)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        remove_os_account(RESEARCHER)
        shutil.rmtree(root, ignore_errors=True)


def login(platform: Platform, name: str, password: str | None = None) -> requests.Response:
    """POST the login form; the (unfollowed) response, with the session on `.session`."""
    session = requests.Session()
    session.get(f"{platform.url}/hub/login", timeout=30)
    response = session.post(
        f"{platform.url}/hub/login",
        data={
            "username": name,
            "password": PASSWORDS[name] if password is None else password,
            "_xsrf": session.cookies.get("_xsrf", path="/hub/"),
        },
        allow_redirects=False,
        timeout=60,
    )
    response.session = session  # type: ignore[attr-defined]
    return response


@pytest.fixture(scope="module")
def sessions(platform: Platform) -> dict[str, requests.Session]:
    """A signed-in session per role (anonymous: none), the researcher's server started."""
    result = {"anonymous": requests.Session()}
    for role, name in (("clinician", CLINICIAN), ("researcher", RESEARCHER), ("admin", ADMIN)):
        response = login(platform, name)
        assert response.status_code == 302, f"{name} could not sign in"
        result[role] = response.session  # type: ignore[attr-defined]
    researcher = result["researcher"]
    researcher.get(f"{platform.url}/hub/spawn", timeout=60)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if researcher.get(f"{platform.url}/user/{RESEARCHER}/lab", timeout=30).url.endswith(
            f"/user/{RESEARCHER}/lab"
        ):
            break
        time.sleep(2)
    else:
        pytest.fail("the researcher's JupyterLab did not start within 180 s")
    return result


KERNEL_ID = re.compile(r'kernelId[\\"]*:\s*[\\"]*([0-9a-f-]{36})')


def close_app_kernel(platform: Platform, session: requests.Session, page: str) -> None:
    """Shut down the kernel an app page got, as the browser does when the tab closes."""
    kernel = KERNEL_ID.search(page)
    assert kernel, "the app page names its kernel"
    xsrf = session.cookies.get("_xsrf", path="/services/bcdiag-app/") or ""
    closed = session.post(
        f"{platform.url}/services/bcdiag-app/voila/api/shutdown/{kernel.group(1)}",
        headers={"X-XSRFToken": xsrf},
        timeout=60,
    )
    assert closed.status_code == 204, closed.text[:300]


# --- the access matrix ------------------------------------------------------------------
OK, LOGIN, DENIED, ALLOWED, SKIP = "ok", "login", "denied", "allowed", "skip"
APP, PANEL = "app", "panel"
"""ok: 200 at the asked URL; login: ends on the login page; app: ends in the clinician app;
panel: ends in the admin panel (admins get no server of their own);
denied: 401/403/404 (and not the login page); allowed: neither 401/403/404 nor the login
page (e.g. 400 "already running"); skip: not probed, for the reason in the comment."""


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {self}: the signed-in user's name; {other}: someone else's
    expected: dict[str, str]


def _all(anonymous: str, clinician: str, researcher: str, admin: str) -> dict[str, str]:
    return dict(zip(ROLES, (anonymous, clinician, researcher, admin), strict=True))


MATRIX = [
    # clinicians never meet Jupyter: every hub page of theirs leads to the app
    Route("GET", "/hub/", _all(LOGIN, APP, ALLOWED, PANEL)),  # researcher: to the lab
    Route("GET", "/hub/home", _all(LOGIN, APP, OK, PANEL)),
    Route("GET", "/hub/admin", _all(LOGIN, DENIED, DENIED, OK)),
    # admin: spawning a second server costs a minute of CI; admins hold every scope anyway
    Route("GET", "/hub/spawn", _all(LOGIN, APP, ALLOWED, PANEL)),  # researcher: to the lab
    Route("GET", "/hub/spawn/{other}", _all(LOGIN, DENIED, DENIED, SKIP)),
    Route("POST", "/hub/api/users/{self}/server", _all(DENIED, DENIED, ALLOWED, SKIP)),
    Route("GET", "/user/{self}/lab", _all(LOGIN, DENIED, OK, SKIP)),
    Route("GET", "/user/{self}/api/kernels", _all(LOGIN, DENIED, OK, SKIP)),
    Route("GET", "/user/{other}/lab", _all(LOGIN, DENIED, DENIED, SKIP)),
    Route("GET", "/user/{other}/api/contents", _all(DENIED, DENIED, DENIED, SKIP)),
    Route("GET", "/services/bcdiag-app/", _all(LOGIN, OK, DENIED, OK)),
    Route("GET", "/services/mlflow/", _all(LOGIN, DENIED, OK, OK)),
    Route(
        "GET",
        "/services/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=1",
        _all(LOGIN, DENIED, OK, OK),
    ),
    Route("GET", "/hub/signup", _all(DENIED, DENIED, DENIED, DENIED)),
    Route("POST", "/hub/signup", _all(DENIED, DENIED, DENIED, DENIED)),
    Route("GET", "/hub/authorize", _all(DENIED, DENIED, DENIED, OK)),
    Route("GET", "/hub/change-password", _all(LOGIN, OK, OK, OK)),
    Route("GET", "/hub/change-password/{other}", _all(DENIED, DENIED, DENIED, OK)),
    Route("GET", "/hub/token", _all(LOGIN, APP, OK, OK)),  # the page; creating one is scoped:
    Route("POST", "/hub/api/users/{self}/tokens", _all(DENIED, DENIED, ALLOWED, ALLOWED)),
    Route("GET", "/hub/api/users", _all(DENIED, DENIED, DENIED, OK)),
    Route("GET", "/hub/api/user", _all(DENIED, OK, OK, OK)),
    Route("GET", "/hub/metrics", _all(DENIED, DENIED, DENIED, OK)),
]
NAMES = {"clinician": CLINICIAN, "researcher": RESEARCHER, "admin": ADMIN, "anonymous": CLINICIAN}
OTHER = {"clinician": RESEARCHER, "researcher": CLINICIAN, "admin": RESEARCHER}


def outcome(platform: Platform, session: requests.Session, method: str, path: str) -> str:
    """What a request ends in: ok / login / denied / allowed (other status)."""
    headers = {"X-XSRFToken": session.cookies.get("_xsrf", path="/hub/") or ""}
    response = session.request(
        method, f"{platform.url}{path}", headers=headers, timeout=120, allow_redirects=True
    )
    if "/hub/login" in response.url and response.status_code == 200:
        return LOGIN
    if response.status_code in (401, 403, 404):
        return DENIED
    if response.status_code == 200 and response.url == f"{platform.url}{path}":
        return OK
    if response.status_code == 200 and response.url.startswith(f"{platform.url}/{APP_PATH}"):
        return APP
    if response.status_code == 200 and response.url == f"{platform.url}/hub/admin":
        return PANEL
    return f"{ALLOWED} ({response.status_code} at {response.url})"


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_access_matrix(
    platform: Platform, sessions: dict[str, requests.Session], role: str
) -> None:
    session = sessions[role]
    wrong = []
    for route in MATRIX:
        expected = route.expected[role]
        if expected == SKIP:
            continue
        path = route.path.format(self=NAMES[role], other=OTHER.get(role, RESEARCHER))
        got = outcome(platform, session, route.method, path)
        if (expected == ALLOWED and got.startswith(ALLOWED)) or got == expected:
            continue
        wrong.append(f"{route.method} {path}: expected {expected}, got {got}")
    assert not wrong, f"{role}:\n" + "\n".join(wrong)


# --- every route judged -----------------------------------------------------------------
# Hub routes (patterns as JupyterHub registers them, under /hub) judged by the matrix, or
# not probed for the reason given.
JUDGED_ELSEWHERE = {
    "": "redirects to /hub/home (matrix: /hub/home)",
    "/": "matrix",
    "/home": "matrix",
    "/admin": "matrix",
    "/spawn": "matrix",
    "/spawn/([^/]+)": "matrix",
    "/spawn/([^/]+)/([^/]+)": "named servers are off",
    "/spawn-pending/([^/]+)": "progress page of one's own spawn (researcher flow)",
    "/spawn-pending/([^/]+)/([^/]+)": "named servers are off",
    "/user/(?P<user_name>[^/]+)(?P<user_path>/.*)?": "matrix: /user/{self|other}/…",
    "/user-redirect/(.*)?": "redirects to /user/{self}/…, judged there",
    "/security/csp-report": "browser CSP reports; logs only",
    "/token": "matrix",
    "/accept-share": "sharing is off (no shares scope granted)",
    "/error/(\\d+)": "error pages (test_error_pages_speak_plain_language)",
    "/health$": "health check, no data",
    "/api/health$": "health check, no data",
    "/login": "test_lockout…, test_login…",
    "/logout": "test_logout_lands_on_the_login_page",
    "/metrics$": "matrix",
    "/api/metrics$": "as /metrics",
    "/logo": "static image",
    "/api/(.*)": "API 404 fallback",
    # NativeAuthenticator
    "/signup": "matrix: absent (404)",
    "/discard/([^/]*)": "admin:users scope, as /authorize",
    "/authorize": "matrix",
    "/authorize/([^/]*)": "admin:users scope, as /authorize",
    "/confirm/([^/]*)": "self-approval is off: answers 'Invalid URL'",
    "/change-password": "matrix",
    "/change-password/([^/]+)": "matrix",
}
# The REST API is checked per token scope on every handler; the matrix samples it
# (users list, own user, own server).
API_PREFIX = "/api/"
# Proxy routes besides the hub's: one per service and per running server.
PROXY_ROUTES = {"/services/bcdiag-app", "/services/mlflow", f"/user/{RESEARCHER}"}


def hub_patterns() -> list[str]:
    """Every page route the hub registers (as in JupyterHub.init_handlers)."""
    from jupyterhub import apihandlers, handlers
    from nativeauthenticator import NativeAuthenticator

    from bcdiag.platform.hub_pages import HANDLERS

    native = [pattern for pattern, *_ in NativeAuthenticator.get_handlers(None, None)]  # type: ignore[arg-type]
    native += [pattern for pattern, _ in HANDLERS]
    pages = [pattern for pattern, *_ in handlers.default_handlers]
    api = [pattern for pattern, *_ in apihandlers.default_handlers]
    return [*native, *pages, *api, "/logo", "/api/(.*)"]


@pytest.mark.slow
def test_every_hub_route_has_an_expected_outcome(
    platform: Platform, sessions: dict[str, requests.Session]
) -> None:
    unjudged = [
        pattern
        for pattern in hub_patterns()
        if pattern not in JUDGED_ELSEWHERE and not pattern.startswith(API_PREFIX)
    ]
    assert not unjudged, f"routes without an expected outcome: {unjudged}"
    table = requests.get(
        f"http://127.0.0.1:{platform.env['BCDIAG_PROXY_API_PORT']}/api/routes",
        headers={"Authorization": f"token {platform.proxy_token}"},
        timeout=10,
    ).json()
    proxied = {route.rstrip("/") for route in table} - {""}
    assert proxied == PROXY_ROUTES, "proxy routes changed; judge the new ones in MATRIX"


# --- login hardening --------------------------------------------------------------------
@pytest.mark.slow
def test_signup_is_absent_and_login_page_offers_none(platform: Platform) -> None:
    assert requests.get(f"{platform.url}/hub/signup", timeout=30).status_code == 404
    page = requests.get(f"{platform.url}/hub/login", timeout=30).text
    assert "username_input" in page and not re.search(r"sign ?up", page, re.IGNORECASE)


def test_anonymous_service_requests_redirect_without_an_error(platform: Platform) -> None:
    for service in ("bcdiag-app", "mlflow"):
        url = f"{platform.url}/services/{service}/?probe=anonymous-{service}"
        response = requests.get(url, allow_redirects=False, timeout=30)
        assert response.status_code == 302, service
        assert "/hub/api/oauth2/authorize" in response.headers["Location"]
    time.sleep(1)  # the proxies log after answering
    log = platform.log.read_text(errors="replace")
    assert "Uncaught exception" not in log, log[log.find("Uncaught exception") :][:2000]


LOCKED = re.compile(r"this account is locked until \d\d:\d\d \w+ \(in \d+ seconds?\)")


@pytest.mark.slow
def test_lockout_after_five_bad_passwords_and_its_end(platform: Platform) -> None:
    add_user(platform.env, "locked-out", "clinicians")
    password = PASSWORDS.get("locked-out", "horse battery staple 9")
    for attempt in range(1, 6):
        failed = login(platform, "locked-out", "wrong password!!")
        assert failed.status_code == 200, attempt
        if attempt < 5:
            assert "Invalid username or password" in failed.text, attempt
    assert LOCKED.search(failed.text), "the fifth failure says the account is now locked"
    locked_at = time.monotonic()
    refused = login(platform, "locked-out", password)
    assert refused.status_code != 302, "the right password must not open a locked account"
    assert LOCKED.search(refused.text), "and the page says until when"
    assert login(platform, CLINICIAN).status_code == 302, "others are not locked out"
    time.sleep(max(0.0, locked_at + LOCKOUT_S + 1.5 - time.monotonic()))
    assert login(platform, "locked-out", password).status_code == 302, "the lockout ends"


@pytest.mark.slow
def test_disable_enable_and_remove_on_the_live_hub(
    platform: Platform, sessions: dict[str, requests.Session]
) -> None:
    add_user(platform.env, "dr-gone", "clinicians")
    password = PASSWORDS.get("dr-gone", "horse battery staple 9")
    disabled = users_cli(platform.env, "disable", "dr-gone", "--json")
    assert json.loads(disabled.stdout)["via"] == "hub API", disabled.stderr
    assert "This account is disabled" in login(platform, "dr-gone", password).text
    assert users_cli(platform.env, "enable", "dr-gone").returncode == 0
    assert login(platform, "dr-gone", password).status_code == 302
    removed = users_cli(platform.env, "remove", "dr-gone", "--yes", "--json")
    assert json.loads(removed.stdout)["via"] == "hub API", removed.stderr
    gone = sessions["admin"].get(f"{platform.url}/hub/api/users/dr-gone", timeout=30)
    assert gone.status_code == 404
    assert "Invalid username or password" in login(platform, "dr-gone", password).text


@pytest.mark.slow
def test_change_password_page_applies_the_rules(platform: Platform) -> None:
    add_user(platform.env, "dr-change", "clinicians")
    old = PASSWORDS.get("dr-change", "horse battery staple 9")
    session = login(platform, "dr-change", old).session  # type: ignore[attr-defined]

    def change(new: str) -> str:
        form = {"old_password": old, "new_password": new, "new_password_confirmation": new}
        form["_xsrf"] = session.cookies.get("_xsrf", path="/hub/") or ""
        return str(session.post(f"{platform.url}/hub/change-password", data=form, timeout=60).text)

    assert "The password was not changed: it is too easy to guess" in change("password1234")
    assert "it contains the user name" in change("Dr-Change tram oboe 7")
    assert "changed successfully" in change("quiet lantern meadow 7")
    assert login(platform, "dr-change", "quiet lantern meadow 7").status_code == 302


@pytest.mark.slow
def test_an_invalid_login_form_shows_the_form_again(platform: Platform) -> None:
    session = requests.Session()
    session.get(f"{platform.url}/hub/login", timeout=30)
    form = {"username": CLINICIAN, "password": PASSWORDS[CLINICIAN], "_xsrf": "expired"}
    refused = session.post(f"{platform.url}/hub/login", data=form, timeout=30)
    assert refused.status_code == 403
    assert "Login form invalid or expired. Try again." in refused.text
    assert 'id="username_input"' in refused.text


@pytest.mark.slow
def test_users_add_refuses_short_and_common_passwords(platform: Platform) -> None:
    for password in ("short", "123qweasdzxc", "password1234"):  # 12 characters, but common
        done = users_cli(platform.env, "add", "weak", "--group", "clinicians", stdin=password)
        assert done.returncode != 0 and "password" in done.stderr
    assert login(platform, CLINICIAN, "short").status_code != 302


# --- in the browser -----------------------------------------------------------------------
@pytest.fixture
def browser_page() -> Iterator[Page]:
    """A fresh Chromium page (Debian's Chromium through Playwright)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()


def sign_in(page: Page, platform: Platform, name: str) -> None:
    page.goto(f"{platform.url}/", timeout=60_000)
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORDS[name])
    page.click("#login_submit")


@pytest.fixture
def us_champion(
    platform: Platform, small_bundle: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """`small_bundle` registered as the US champion in the platform's own MLflow, the
    promotion audited in the platform's own database."""
    uri = f"http://127.0.0.1:{platform.env['BCDIAG_MLFLOW_PORT']}"
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("hub-tests")  # the active experiment id may be another server's
    settings = Settings(home=Path(platform.env["BCDIAG_HOME"]))
    try:
        with Storage.from_settings(settings) as trail:
            register(small_bundle, trail)
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.slow
def test_clinician_signs_in_lands_in_app_and_analyses_a_dicom(
    platform: Platform, us_champion: None, browser_page: Page, data_dir: Path
) -> None:
    page = browser_page
    sign_in(page, platform, CLINICIAN)
    page.get_by_text("Signed in as").wait_for(timeout=120_000)
    assert "/services/bcdiag-app/" in page.url
    assert f"Signed in as {CLINICIAN}" in page.inner_text("body")
    _upload(page, [data_dir / "dicom" / "US1_J2KR.dcm"])
    try:
        page.get_by_text("Probability of malignancy").wait_for(timeout=120_000)
    except PlaywrightTimeout:
        pytest.fail(f"no result card after 120 s; the page reads:\n{page.inner_text('body')}")
    finally:
        page.screenshot(path=str(ARTIFACTS / "hub_clinician_app.png"), full_page=True)
    assert "Traceback" not in page.inner_text("body")


@pytest.mark.slow
def test_researcher_signs_in_and_lands_in_jupyterlab(
    platform: Platform, browser_page: Page
) -> None:
    page = browser_page
    sign_in(page, platform, RESEARCHER)
    page.wait_for_selector(".jp-LabShell", timeout=180_000)
    assert f"/user/{RESEARCHER}/lab" in page.url
    page.screenshot(path=str(ARTIFACTS / "hub_researcher_lab.png"))


@pytest.mark.slow
def test_app_websockets_need_a_hub_login(
    platform: Platform, sessions: dict[str, requests.Session]
) -> None:
    """A kernel's channels open only for a signed-in clinician, not for whoever knows its id."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    page = sessions["clinician"].get(f"{platform.url}/services/bcdiag-app/", timeout=120)
    kernel = KERNEL_ID.search(page.text)
    assert kernel, "the app page names its kernel"
    url = platform.url.replace("http", "ws") + (
        f"/services/bcdiag-app/api/kernels/{kernel.group(1)}/channels"
    )
    statuses = {}
    for role in ("anonymous", "researcher", "clinician"):
        cookies = "; ".join(f"{c.name}={c.value}" for c in sessions[role].cookies)
        try:
            with connect(url, additional_headers={"Cookie": cookies}, open_timeout=60):
                statuses[role] = 101
        except InvalidStatus as refused:
            statuses[role] = refused.response.status_code
    close_app_kernel(platform, sessions["clinician"], page.text)
    assert statuses == {"anonymous": 403, "researcher": 403, "clinician": 101}


@pytest.mark.slow
def test_each_page_names_its_own_clinician_with_preheated_kernels(platform: Platform) -> None:
    """One Voilà serves every clinician from a pool of preheated kernels; each page's kernel
    learns its user from its own request (alternating users, so a leak would show)."""
    for name in (CLINICIAN, SECOND_CLINICIAN, CLINICIAN, SECOND_CLINICIAN):
        session = login(platform, name).session  # type: ignore[attr-defined]
        page = session.get(f"{platform.url}/services/bcdiag-app/", timeout=180).text
        shown = re.findall(r"Signed in as \\u003cb\\u003e([^\\]+)\\u003c/b", page)
        assert shown == [name], f"{name}'s page shows {shown}"
        close_app_kernel(platform, session, page)


def browser_login(page: Page, platform: Platform, name: str, password: str) -> None:
    """Submit the login form in the browser and wait for the answer."""
    page.goto(f"{platform.url}/hub/login", timeout=60_000)
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    # "commit": a sign-in that opens the app need not wait for its kernel
    with page.expect_navigation(wait_until="commit", timeout=120_000):
        page.click("#login_submit", no_wait_after=True)


@pytest.mark.slow
def test_locked_account_says_until_when_and_unlock_lets_it_in(
    platform: Platform, browser_page: Page
) -> None:
    page = browser_page
    add_user(platform.env, "dr-locked", "clinicians")
    password = PASSWORDS.get("dr-locked", "horse battery staple 9")
    for _ in range(5):
        browser_login(page, platform, "dr-locked", "wrong password!!")
    browser_login(page, platform, "dr-locked", password)
    said = page.locator(".login_error").inner_text()
    page.screenshot(path=str(ARTIFACTS / "hub_login_locked.png"))
    assert LOCKED.search(said), said
    unlocked = users_cli(platform.env, "unlock", "dr-locked", "--json")
    assert unlocked.returncode == 0, unlocked.stderr
    assert json.loads(unlocked.stdout)["changed"] is True, "it was still locked: unlock ended it"
    browser_login(page, platform, "dr-locked", password)
    page.wait_for_url(f"**/{APP_PATH}**", timeout=120_000)


@pytest.mark.slow
def test_admin_panel_offers_no_add_users(
    platform: Platform, sessions: dict[str, requests.Session], browser_page: Page
) -> None:
    """Its "Add Users" made accounts without password or group: hidden, and refused."""
    page = browser_page
    browser_login(page, platform, ADMIN, PASSWORDS[ADMIN])
    page.wait_for_url("**/hub/admin**", timeout=60_000)
    page.get_by_text(CLINICIAN, exact=True).first.wait_for(timeout=60_000)  # the user table
    page.screenshot(path=str(ARTIFACTS / "hub_admin_panel.png"))
    assert page.get_by_role("button", name="Add Users").is_hidden()
    assert "bcdiag users add NAME --group" in page.inner_text("#bcdiag-add-users")
    rows = page.locator("#bcdiag-status tr").all_inner_texts()
    assert [row.split("\t")[:2] for row in rows] == [
        ["Inference service", "running"],
        ["Retraining scheduler", "running"],
        ["MLflow", "running"],
    ], rows
    # what the service holds (other tests of this platform register a champion)
    assert re.search(r"holds (no champion yet|bcdiag-(us|mg) version \d+)", rows[0]), rows
    assert "next cycle" in rows[1], rows
    admin = sessions["admin"]
    refused = admin.post(
        f"{platform.url}/hub/api/users",
        json={"usernames": ["ghost"]},
        headers={"X-XSRFToken": admin.cookies.get("_xsrf", path="/hub/") or ""},
        timeout=60,
    )
    assert refused.status_code == 400 and "bcdiag users add ghost" in refused.text
    assert admin.get(f"{platform.url}/hub/api/users/ghost", timeout=60).status_code == 404


@pytest.mark.parametrize("name", [CLINICIAN, ADMIN])
def test_no_jupyter_server_for_a_clinician_or_an_admin_even_when_an_admin_starts_one(
    platform: Platform, sessions: dict[str, requests.Session], name: str
) -> None:
    """Only researchers get a server: an admin's would run with the hub's own rights."""
    admin = sessions["admin"]
    xsrf = {"X-XSRFToken": admin.cookies.get("_xsrf", path="/hub/") or ""}
    started = admin.post(f"{platform.url}/hub/api/users/{name}/server", headers=xsrf, timeout=120)
    refusal = rf"{name} is [a-z ]+: only researchers get a Jupyter server"
    assert started.status_code == 403 and re.search(refusal, started.json()["message"])
    assert re.search(refusal, platform.log.read_text(errors="replace")), "the hub log says why"
    model = admin.get(f"{platform.url}/hub/api/users/{name}", timeout=60).json()
    assert model["servers"] == {}


JARGON = ("requires any of", "scope", "[servers]", "moons", "Traceback")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("role", "path", "status", "way_back"),
    [
        ("clinician", "/hub/spawn/rob", 403, APP_PATH),
        ("clinician", "/user/dr-alice/lab", 404, APP_PATH),  # the hub: no such server
        ("clinician", "/hub/no-such-page", 404, APP_PATH),
        ("researcher", f"/{APP_PATH}", 403, "hub/home"),
        ("anonymous", "/hub/no-such-page", 404, "hub/login"),
    ],
)
def test_error_pages_speak_plain_language(
    platform: Platform,
    sessions: dict[str, requests.Session],
    role: str,
    path: str,
    status: int,
    way_back: str,
) -> None:
    page = sessions[role].get(f"{platform.url}{path}", timeout=60)
    assert page.status_code == status, page.url
    heading = {403: "You do not have access to this page", 404: "This page does not exist"}
    assert heading[status] in page.text
    assert not [word for word in JARGON if word in page.text]
    assert re.search(rf'id="workplace"[^>]*href="/{re.escape(way_back)}', page.text)


@pytest.mark.slow
def test_logout_lands_on_the_login_page(platform: Platform, browser_page: Page) -> None:
    page = browser_page
    browser_login(page, platform, SECOND_CLINICIAN, PASSWORDS[SECOND_CLINICIAN])
    page.wait_for_url(f"**/{APP_PATH}**", timeout=120_000)
    page.goto(f"{platform.url}/hub/logout", timeout=60_000)
    assert page.url.startswith(f"{platform.url}/hub/login")
    page.goto(f"{platform.url}/hub/home", timeout=60_000)
    assert page.url.startswith(f"{platform.url}/hub/login"), "signed out of the hub"
    page.goto(f"{platform.url}/{APP_PATH}", timeout=120_000)
    assert page.url.startswith(f"{platform.url}/hub/login"), "and out of the app"


# --- researchers are not admins: own OS account, no clinical data, no hub secrets ---------
@pytest.fixture(scope="module")
def lab(platform: Platform, sessions: dict[str, requests.Session]) -> LabClient:
    """The researcher's running JupyterLab, driven over its REST API and websockets."""
    return LabClient(platform.url, RESEARCHER, sessions["researcher"])


@pytest.fixture(scope="module")
def clinical_files(platform: Platform, data_dir: Path) -> dict[str, Path]:
    """What a researcher must not read, each checked to exist (so that "denied" is not
    "missing"): one scan is stored, as a clinician's upload would be."""
    home = Path(platform.env["BCDIAG_HOME"])
    with Storage.from_settings(Settings(home=home)) as storage:
        scan = storage.store_scan(
            (data_dir / "dicom" / "JPGLosslessP14SV1_1s_1f_8b.dcm").read_bytes(),
            filename="scan.dcm",
            metadata={"format": "dicom"},
            user=CLINICIAN,
            identity=None,
            case_name="Case A",
        )
    files = {
        "hub cookie secret": home / "hub" / "cookie_secret",
        "hub admin API token": home / "hub" / "admin-api-token",
        "hub database": home / "hub" / "jupyterhub.sqlite",
        "clinical database": home / "bcdiag.sqlite",
        "stored scan": next((home / "blobs").rglob(f"*{scan.sha256}*")),
        "MLflow store": home / "mlflow" / "mlflow.sqlite",
    }
    assert all(path.is_file() for path in files.values()), files
    return files


def test_a_researchers_terminal_runs_as_their_own_account_and_reads_no_secret(
    platform: Platform, lab: LabClient, clinical_files: dict[str, Path]
) -> None:
    account = find_os_account(RESEARCHER)
    assert account is not None and account.name == f"bcdiag-{RESEARCHER}"
    who = lab.terminal("id -un; pwd; ls notebooks")
    assert f"\n{account.name}\n{account.home}\n" in who, who
    assert "train.ipynb" in who and "evaluate.ipynb" in who
    assert "conftest.py" not in who and "app.ipynb" not in who and ".ipynb_checkpoints" not in who
    hub_pid = (Path(platform.env["BCDIAG_HOME"]) / "hub" / "jupyterhub.pid").read_text().strip()
    hub_environment = Path(f"/proc/{hub_pid}/environ")
    for what, path in {**clinical_files, "hub's environment": hub_environment}.items():
        answer = lab.terminal(f"cat {path} | head -c 64")
        assert "Permission denied" in answer, f"{what}: {answer}"


def test_a_researchers_terminal_cannot_reach_the_app_behind_the_hubs_back(
    platform: Platform, sessions: dict[str, requests.Session], lab: LabClient
) -> None:
    """Voilà listens on 127.0.0.1, which every local account reaches; it asks for a token
    that only the hub-OAuth proxy sends, so a forged user header gets nothing."""
    page = sessions["clinician"].get(f"{platform.url}/{APP_PATH}", timeout=180)
    assert page.status_code == 200  # Voilà runs
    close_app_kernel(platform, sessions["clinician"], page.text)
    app = f"http://127.0.0.1:{platform.env['BCDIAG_APP_PORT']}"
    forged = f'X-CDSDASHBOARDS-JH-USER: {{"name": "{CLINICIAN}"}}'
    answer = lab.terminal(
        f"curl -s -o /dev/null -w 'page %{{http_code}} ' -H '{forged}' {app}/; "
        f"curl -s -o /dev/null -w 'kernels %{{http_code}}' -X POST {app}/api/kernels"
    )
    assert "page 302" in answer and "kernels 403" in answer, answer


def test_a_researchers_kernel_is_bcdiags_and_reads_no_secret(
    lab: LabClient, clinical_files: dict[str, Path]
) -> None:
    probes = "\n".join(
        f"try:\n    open({str(path)!r}, 'rb').read(8); print({what!r}, 'READ')\n"
        f"except OSError as e:\n    print({what!r}, type(e).__name__)"
        for what, path in clinical_files.items()
    )
    answer = lab.kernel(
        "import os, bcdiag\n"
        "print('user', os.getuid() == os.geteuid() != 0)\n"
        "print(sorted(k for k in os.environ if 'DATABASE' in k or 'STORAGE' in k or "
        "'ADMIN' in k or 'CONFIGPROXY' in k))\n" + probes
    )
    lines = answer.splitlines()
    assert lines[0] == "bcdiag", "the default kernel is Python (bcdiag)"
    assert "user True" in answer and "[]" in answer, answer
    for what in clinical_files:
        assert f"{what} PermissionError" in answer, answer


def test_a_researchers_kernel_reads_mlflow_but_cannot_move_the_champion(
    lab: LabClient, us_champion: None
) -> None:
    answer = lab.kernel(
        "from mlflow import MlflowClient\n"
        "client = MlflowClient()\n"
        "champion = client.get_model_version_by_alias('bcdiag-us', 'champion')\n"
        "print('reads champion', champion.version)\n"
        "client.set_registered_model_alias('bcdiag-us', 'champion', champion.version)\n"
    )
    assert re.search(r"reads champion \d+", answer), answer
    assert "PERMISSION_DENIED" in answer and "read-only" in answer, answer


def test_an_admin_grants_a_deidentified_export_to_a_researcher(
    platform: Platform, lab: LabClient, clinical_files: dict[str, Path]
) -> None:
    def grant() -> subprocess.CompletedProcess[str]:
        command = ["export", "--deidentify", "--grant", RESEARCHER, "cases"]
        return subprocess.run(
            [sys.executable, "-m", "bcdiag", *command],
            env=platform.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = grant()
    assert done.returncode == 0, done.stderr
    account = find_os_account(RESEARCHER)
    assert account is not None
    folder = account.home / "exports" / "cases"
    assert f"to {folder}" in done.stdout
    assert all(p.stat().st_uid == account.uid for p in [folder, *folder.rglob("*")])
    listing = lab.terminal("ls exports/cases; cat exports/cases/manifest.csv")
    assert "manifest.csv" in listing and ",exported," in listing, listing
    again = grant()
    assert again.returncode == 1 and "exists already" in again.stderr, again.stderr
