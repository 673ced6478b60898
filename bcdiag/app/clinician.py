"""The clinician app: upload scans, see a card per image, reopen past analyses.

Every failure reaches the screen as a sentence, never a traceback: bcdiag's own
errors carry their message; anything else is logged and summarised.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import Any

import ipywidgets as widgets

from bcdiag.app.analyses import (
    AnalysisAccepted,
    AnalysisRejected,
    analyse_upload,
    audit_view,
    warm_up,
)
from bcdiag.app.cards import rejection_widget, result_card
from bcdiag.errors import BcdiagError
from bcdiag.serving.inference import Predictor
from bcdiag.storage import Storage

log = logging.getLogger(__name__)

ACCEPT = ".dcm,.dicom,.png,.jpg,.jpeg,application/dicom,image/png,image/jpeg"
MAX_UPLOAD_FILES = 20
HISTORY_TAB = 1


class ClinicianApp:
    """Widgets and behaviour of the app for one signed-in user.

    The history is listed when its tab is opened (or refreshed there).
    Building the app starts `warm_up` in a background thread (``self.warming``): the page
    shows at once while the champions load, and an early upload waits for the load
    instead of repeating it. Analyse stays disabled until the kernel holds the chosen
    files: the browser reads and sends a large file for a while after it is chosen.
    """

    def __init__(
        self,
        storage: Storage,
        predictor: Predictor,
        user: str,
        warming: threading.Thread | None = None,
    ) -> None:
        self.storage, self.predictor, self.user = storage, predictor, user
        self.warming = warming or start_warm_up(predictor)
        self.upload = widgets.FileUpload(accept=ACCEPT, multiple=True, description="Choose scans")
        self.upload.observe(self._received, names="value")
        self.modality = widgets.ToggleButtons(
            options=[("Ultrasound", "US"), ("Mammogram", "MG")],
            description="PNG/JPEG are:",
        )
        self.analyse = widgets.Button(
            description="Analyse", button_style="primary", icon="play", disabled=True
        )
        self.progress = widgets.IntProgress(min=0, max=1, value=0, description="Progress:")
        self.status = widgets.HTML()
        self.results = widgets.VBox()
        self.history = widgets.VBox()
        self.analyse.on_click(lambda _: self.analyse_uploads())
        refresh = widgets.Button(description="Refresh history", icon="refresh")
        refresh.on_click(lambda _: self.show_history())
        self.tabs = tabs = widgets.Tab(
            children=[
                widgets.VBox(
                    [
                        widgets.HBox([self.upload, self.modality, self.analyse]),
                        self.progress,
                        self.status,
                        self.results,
                    ]
                ),
                widgets.VBox([refresh, self.history]),
            ]
        )
        tabs.set_title(0, "Analyse")
        tabs.set_title(HISTORY_TAB, "My analyses")
        header = widgets.HTML(
            f"<h2>bcdiag</h2><p>Signed in as <b>{html.escape(user)}</b>. "
            "Decision support only — not a diagnosis.</p>"
        )
        # The history is built when its tab opens, not on every analysis: each entry
        # is a few widgets the browser has to render, and a history only grows.
        tabs.observe(self._tab_opened, names="selected_index")
        self.widget = widgets.VBox([header, tabs])

    def _tab_opened(self, change: dict[str, Any]) -> None:
        if change["new"] == HISTORY_TAB:
            self.show_history()

    def _received(self, change: dict[str, Any]) -> None:
        files = change["new"]
        self.analyse.disabled = not files
        if files:
            megabytes = sum(int(item["size"]) for item in files) / 1e6
            self.notify(f"Received {len(files)} file(s), {megabytes:.1f} MB. Press Analyse.")

    def notify(self, message: str) -> None:
        """Show one plain sentence under the progress bar."""
        self.status.value = f"<p class='bcdiag-status'>{html.escape(message)}</p>"

    def analyse_uploads(self) -> None:
        """Analyse every uploaded file, one card or reason each, with progress."""
        files: list[dict[str, Any]] = list(self.upload.value)[:MAX_UPLOAD_FILES]
        if not files:
            self.notify("Choose one or more scans first.")
            return
        self.analyse.disabled = True  # no second run queued behind this one
        self.progress.max, self.progress.value = len(files), 0
        cards: list[widgets.Widget] = []
        for index, item in enumerate(files, start=1):
            name = str(item["name"])
            self.notify(f"Analysing {index} of {len(files)}: {name}")
            cards.append(self._analyse_one(bytes(item["content"]), name))
            self.progress.value = index
            self.results.children = tuple(cards)  # each card appears as soon as it is ready
        self.upload.value = ()
        self.notify(f"Finished {len(files)} file(s).")

    def _analyse_one(self, data: bytes, name: str) -> widgets.Widget:
        try:
            outcome = analyse_upload(
                self.storage, self.predictor, data, name, user=self.user,
                modality=str(self.modality.value),
            )  # fmt: skip
        except BcdiagError as error:
            return widgets.HTML(
                f"<div class='bcdiag-rejected'><b>Not analysed:</b> {html.escape(name)}: "
                f"{html.escape(str(error))}</div>"
            )
        except Exception:  # the screen must never show a traceback; the log keeps it
            log.exception("analysis of %s failed", name)
            return widgets.HTML(
                f"<div class='bcdiag-rejected'>{html.escape(name)}: the analysis failed on our "
                "side. Nothing was recorded for it; please try again or contact support.</div>"
            )
        if isinstance(outcome, AnalysisRejected):
            return rejection_widget(outcome)
        return self._card(outcome)

    def _card(self, outcome: AnalysisAccepted) -> widgets.Widget:
        return result_card(
            self.storage, outcome.analysis, outcome.image_png, outcome.heatmap_png,
            user=self.user, notify=self.notify,
        )  # fmt: skip

    def show_history(self) -> None:
        """List this user's analyses, newest first, each reopenable."""
        rows: list[widgets.Widget] = []
        for analysis in self.storage.list_analyses(self.user):
            button = widgets.Button(description="Open", layout={"width": "80px"})
            button.on_click(lambda _, a=analysis: self.reopen(a.id))
            text = (
                f"{analysis.created_at:%Y-%m-%d %H:%M} · {html.escape(analysis.filename)} · "
                f"{analysis.probability:.1%} · {html.escape(analysis.call)} · "
                f"{html.escape(analysis.model_name)} v{html.escape(analysis.model_version)}"
            )
            rows.append(widgets.HBox([button, widgets.HTML(text)]))
        self.history.children = tuple(rows) or (widgets.HTML("<p>No analyses yet.</p>"),)

    def reopen(self, analysis_id: int) -> None:
        """Show a past analysis as a card again (audited as a view)."""
        analysis = self.storage.get_analysis(analysis_id, self.user)
        heatmap = self.storage.heatmap_png(analysis) or b""
        scan_png = self.storage.blobs.get(analysis.details["image_sha256"])
        audit_view(self.storage, analysis, user=self.user)
        self.results.children = (
            result_card(
                self.storage, analysis, scan_png, heatmap, user=self.user, notify=self.notify
            ),
        )


def start_warm_up(predictor: Predictor) -> threading.Thread:
    """Load the champions and start the scan reader in a background thread (`warm_up`).

    A failure is logged, not raised: the first upload then loads the models and
    reports any error on its card.
    """

    def run() -> None:
        try:
            ready = warm_up(predictor)
        except Exception as error:  # noqa: BLE001 - the first upload retries and reports
            log.warning("warm-up failed (%s); the first upload loads the models", error)
            return
        log.info("warm-up loaded %s", ", ".join(f"{m.name} v{m.version}" for m in ready))

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread
