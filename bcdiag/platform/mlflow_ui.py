"""The researchers' MLflow UI (/services/mlflow/) opens on the classic view, with no
telemetry notice and no assistant panel.

MLflow 3.17's UI keeps both in the browser's localStorage; the server has no flag or
variable for either:

- ``mlflow.workflowType_v1`` chooses the GenAI view (traces, prompts, judges; the
  default) or the classic one (experiments, runs, models); the sidebar's switch and a
  ``?workflowType=`` in the page's address change it.
- ``mlflow.telemetry.info.alert.dismissed_v1`` hides the home page's "Information about
  UI telemetry" notice, which shows whatever the server's telemetry setting (bcdiag
  turns telemetry off: `bcdiag.platform.telemetry`).
- ``mlflow.assistant.fab.autoOpenedOnFirstLoad_v1`` records that the "MLflow Assistant"
  (beta, LLM chat) panel was opened once by itself on a first visit; set, it stays closed
  until a researcher opens it.

`install` makes the MLflow service's hub-OAuth proxy (`bcdiag.platform.proxy`) put a
script into the UI's page that sets these where the browser holds no value yet, so a
researcher's own choice stays.
"""

from __future__ import annotations

import json
from typing import Any

from jhsingle_native_proxy import main as jhsingle
from tornado import httputil, web

UI_DEFAULTS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.telemetry.info.alert.dismissed_v1": True,
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
}
SCRIPT = (
    f"<script>for (const [k, v] of Object.entries({json.dumps(UI_DEFAULTS)})) "
    "if (localStorage.getItem(k) === null) localStorage.setItem(k, JSON.stringify(v));</script>"
)


class ClassicView(web.OutputTransform):
    """Adds `SCRIPT` at the top of MLflow's page (before its own scripts run)."""

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        html = headers.get("Content-Type", "").startswith("text/html")
        if status_code == 200 and finishing and html and b"<head>" in chunk:
            chunk = chunk.replace(b"<head>", b"<head>" + SCRIPT.encode(), 1)
            headers["Content-Length"] = str(len(chunk))
        return status_code, headers, chunk


def install() -> None:
    """Apply `ClassicView` to the responses of the proxy jhsingle-native-proxy builds next
    (call before ``jhsingle_native_proxy.main.run``)."""
    make_app = jhsingle.make_app

    def make_app_with_classic_view(*args: Any, **kwargs: Any) -> web.Application:
        app: web.Application = make_app(*args, **kwargs)
        app.add_transform(ClassicView)
        return app

    jhsingle.make_app = make_app_with_classic_view
