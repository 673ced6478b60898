"""The clinician app: choose scans, see a card per image, reopen past analyses.

Every failure reaches the screen as a sentence, never a traceback: bcdiag's own
errors carry their message; anything else is logged and summarised. Every chosen
file ends as a card or a message.
"""

from __future__ import annotations

import functools
import html
import logging
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from bcdiag.app.analyses import (
    AnalysisAccepted,
    AnalysisOutcome,
    AnalysisRejected,
    analyse_stored,
    analyse_upload,
    audit_view,
    warm_up,
)
from bcdiag.app.cards import rejection_widget, result_card
from bcdiag.app.chooser import MAX_FILES, ChosenFile, FileChooser, over_cap_message
from bcdiag.app.history import HistoryView
from bcdiag.errors import BcdiagError
from bcdiag.serving.results import Scorer
from bcdiag.storage import Storage
from bcdiag.storage.history import HistoryEntry

log = logging.getLogger(__name__)

ACCEPT = ".dcm,.dicom,.png,.jpg,.jpeg,application/dicom,image/png,image/jpeg"
HISTORY_TAB = 1


class ClinicianApp:
    """Widgets and behaviour of the app for one signed-in user.

    The history is listed when its tab is opened (or refreshed there).
    Building the app starts `warm_up` in a background thread (``self.warming``): the page
    shows at once while the scan reader starts and the inference service is asked for
    its champions. Analyse stays disabled until the kernel holds the chosen
    files (the browser reads and sends a large file for a while after it is chosen)
    and every PNG/JPEG has its kind of scan chosen.
    """

    def __init__(
        self,
        storage: Storage,
        scorer: Scorer,
        user: str,
        warming: threading.Thread | None = None,
        sign_out_url: str | None = None,
    ) -> None:
        self.storage, self.scorer, self.user = storage, scorer, user
        self.warming = warming or start_warm_up(scorer)
        self.upload = widgets.FileUpload(
            accept=ACCEPT, multiple=True, description="Choose scans", layout={"width": "auto"}
        )
        self.upload.observe(self._received, names="value")
        self.chooser = FileChooser(self._update_analyse)
        self.analyse = widgets.Button(
            description="Analyse", button_style="primary", icon="play", disabled=True
        )
        self.progress = widgets.IntProgress(min=0, max=1, value=0, description="Progress:")
        self.status = widgets.HTML()
        self.results = widgets.VBox()
        self.history = HistoryView(storage, user, self._open_card, self._analyse_later)
        self.analyse.on_click(lambda _: self.analyse_uploads())
        limits = widgets.HTML(
            f"<span class='bcdiag-limits'>Up to {MAX_FILES} files at a time: "
            "DICOM, PNG or JPEG.</span>"
        )
        self.tabs = tabs = widgets.Tab(
            children=[
                widgets.VBox(
                    [
                        widgets.HBox([self.upload, limits]),
                        self.chooser.widget,
                        self.analyse,
                        self.progress,
                        self.status,
                        self.results,
                    ]
                ),
                self.history.widget,
            ]
        )
        tabs.set_title(0, "Analyse")
        tabs.set_title(HISTORY_TAB, "My analyses")
        sign_out = (
            "" if sign_out_url is None
            else f" · <a class='bcdiag-sign-out' href='{html.escape(sign_out_url)}'>Sign out</a>"
        )  # fmt: skip
        header = widgets.HTML(
            f"<h2>bcdiag</h2><p>Signed in as <b>{html.escape(user)}</b>{sign_out}. "
            "Decision support only — not a diagnosis.</p>"
        )
        # The history is built when its tab opens, not on every analysis: each entry
        # is a few widgets the browser has to render, and a history only grows.
        tabs.observe(self._tab_opened, names="selected_index")
        self.widget = widgets.VBox([header, tabs])

    def _tab_opened(self, change: dict[str, Any]) -> None:
        if change["new"] == HISTORY_TAB:
            self.history.refresh()

    def _received(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        self.chooser.choose(files)
        megabytes = sum(int(item["size"]) for item in files) / 1e6
        message = f"Received {len(files)} file(s), {megabytes:.1f} MB."
        if self.chooser.over_cap:
            message += (
                f" Only the first {MAX_FILES} are analysed in one batch; the other "
                f"{len(self.chooser.over_cap)} are listed below."
            )
        self.notify(message + self._next_step())

    def _next_step(self) -> str:
        missing = self.chooser.missing
        if missing:
            return f" Choose the kind of scan for {missing} PNG/JPEG file(s), then press Analyse."
        return " Press Analyse."

    def _update_analyse(self) -> None:
        self.analyse.disabled = not self.chooser.files or self.chooser.missing > 0

    def notify(self, message: str) -> None:
        """Show one plain sentence under the progress bar."""
        self.status.value = f"<p class='bcdiag-status'>{html.escape(message)}</p>"

    def analyse_uploads(self) -> None:
        """Analyse every chosen file, one card or reason each, with progress."""
        chosen, over_cap = self.chooser.files, self.chooser.over_cap
        if not chosen:
            self.notify("Choose one or more scans first.")
            return
        if self.chooser.missing:
            self.notify(self._next_step().strip())
            return
        self.analyse.disabled = True  # no second run queued behind this one
        self.progress.max, self.progress.value = len(chosen), 0
        cards: list[widgets.Widget] = []
        analysed = 0
        for index, item in enumerate(chosen, start=1):
            self.notify(f"Analysing {index} of {len(chosen)}: {item.name}")
            outcome = self._guarded(item.name, functools.partial(self._upload_one, item))
            analysed += isinstance(outcome, AnalysisAccepted)
            cards.append(self._shown(item.name, outcome))
            self.progress.value = index
            self.results.children = tuple(cards)  # each card appears as soon as it is ready
        cards += [rejection_widget(over_cap_message(name)) for name in over_cap]
        self.results.children = tuple(cards)
        self.upload.value = ()
        self.chooser.clear()
        total = len(chosen) + len(over_cap)
        self.notify(
            f"Finished {total} file(s): {analysed} analysed, {total - analysed} not analysed."
        )

    def _upload_one(self, item: ChosenFile) -> AnalysisOutcome:
        return analyse_upload(
            self.storage, self.scorer, item.data, item.name, user=self.user,
            modality=item.stated_modality,
        )  # fmt: skip

    def _guarded(self, name: str, analyse: Callable[[], AnalysisOutcome]) -> AnalysisOutcome | str:
        """The outcome, or the sentence to show when the analysis failed."""
        try:
            return analyse()
        except BcdiagError as error:
            return f"{name}: {error}"
        except Exception:  # the screen must never show a traceback; the log keeps it
            log.exception("analysis of %s failed", name)
            return (
                f"{name}: the analysis failed on our side. Nothing was recorded for it; "
                "please try again or contact support."
            )

    def _shown(self, name: str, outcome: AnalysisOutcome | str) -> widgets.Widget:
        if isinstance(outcome, str):
            return rejection_widget(outcome)
        if isinstance(outcome, AnalysisRejected):
            return rejection_widget(outcome.message)
        return self._card(outcome)

    def _card(self, outcome: AnalysisAccepted) -> widgets.Widget:
        return result_card(
            self.storage, outcome.analysis, outcome.result.image_png, outcome.result.heatmap_png,
            user=self.user, notify=self.notify,
        )  # fmt: skip

    def _open_card(self, entry: HistoryEntry) -> widgets.Widget:
        """A past analysis as its card again (audited as a view)."""
        if entry.analysis is None:
            raise ValueError("only an analysed entry has a card")
        return self.reopen(entry.analysis.id)

    def _analyse_later(self, entry: HistoryEntry) -> widgets.Widget:
        """Analyse a stored scan that has no analysis yet."""
        scan = self.storage.get_scan(entry.scan_id)
        outcome = self._guarded(
            entry.filename,
            lambda: analyse_stored(self.storage, self.scorer, scan, entry.filename, user=self.user),
        )
        return self._shown(entry.filename, outcome)

    def reopen(self, analysis_id: int) -> widgets.Widget:
        """The card of a past analysis, as first shown (audited as a view)."""
        analysis = self.storage.get_analysis(analysis_id, self.user)
        heatmap = self.storage.heatmap_png(analysis) or b""
        scan_png = self.storage.blobs.get(analysis.details["image_sha256"])
        audit_view(self.storage, analysis, user=self.user)
        return result_card(
            self.storage, analysis, scan_png, heatmap, user=self.user, notify=self.notify
        )


def start_warm_up(scorer: Scorer) -> threading.Thread:
    """Start the scan reader and ask for the champions in a background thread (`warm_up`).

    A failure is logged, not raised: the first upload reports any error on its card.
    """

    def run() -> None:
        try:
            ready = warm_up(scorer)
        except Exception as error:  # noqa: BLE001 - the first upload retries and reports
            log.warning("warm-up failed (%s); the first upload will report it", error)
            return
        log.info("champions ready: %s", ", ".join(f"{m.name} v{m.version}" for m in ready))

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread
