"""The clinician app: choose scans and see a card per image; read exams from the worklist.

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
from typing import Any, TypeVar

import ipywidgets as widgets

from bcdiag.app.analyses import (
    AnalysisAccepted,
    AnalysisOutcome,
    AnalysisRejected,
    analyse_stored,
    analyse_upload,
    warm_up,
)
from bcdiag.app.cards import rejection_widget, result_card
from bcdiag.app.chooser import MAX_FILES, ChosenFile, FileChooser, over_cap_message
from bcdiag.app.exam_view import ExamView
from bcdiag.app.worklist_view import WorklistView
from bcdiag.errors import BcdiagError
from bcdiag.serving.results import Scorer
from bcdiag.storage import Storage
from bcdiag.storage.worklist import ExamImageEntry

log = logging.getLogger(__name__)

T = TypeVar("T")
ACCEPT = ".dcm,.dicom,.png,.jpg,.jpeg,application/dicom,image/png,image/jpeg"
WORKLIST_TAB = 1


class ClinicianApp:
    """Widgets and behaviour of the app for one signed-in user.

    The worklist is listed when its tab is opened (or refreshed there); choosing an exam
    shows it on the right. PNG/JPEG files join the case the clinician names (DICOM files
    their patient's, from the header).
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
        self.received_note = ""  # what the last choice of files was, while it waits
        self.chooser = FileChooser(self._update_analyse)
        self.case = widgets.Combobox(
            placeholder="Case (patient) for PNG/JPEG files: choose or type a new one",
            ensure_option=False,
            layout={"width": "480px"},
        )
        self.case.observe(lambda _: self._update_analyse(), names="value")
        self.analyse = widgets.Button(
            description="Analyse", button_style="primary", icon="play", disabled=True
        )
        self.progress = widgets.IntProgress(min=0, max=1, value=0, description="Progress:")
        self.status = widgets.HTML()
        self.results = widgets.VBox()
        self.exam_view = ExamView(storage, user, self.notify, self._analyse_image)
        self.worklist = WorklistView(storage, user, self._open_exam)
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
                        self.case,
                        self.analyse,
                        self.progress,
                        self.status,
                        self.results,
                    ]
                ),
                widgets.HBox([self.worklist.widget, self.exam_view.widget]),
            ]
        )
        tabs.set_title(0, "Analyse")
        tabs.set_title(WORKLIST_TAB, "Worklist")
        sign_out = (
            "" if sign_out_url is None
            else f" · <a class='bcdiag-sign-out' href='{html.escape(sign_out_url)}'>Sign out</a>"
        )  # fmt: skip
        header = widgets.HTML(
            f"<p class='bcdiag-header'><b>bcdiag</b> · Signed in as <b>{html.escape(user)}</b>"
            f"{sign_out}. Decision support only — not a diagnosis.</p>"
        )
        # The worklist is read when its tab opens, not on every analysis.
        tabs.observe(self._tab_opened, names="selected_index")
        self.widget = widgets.VBox([header, tabs])

    def _tab_opened(self, change: dict[str, Any]) -> None:
        if change["new"] == WORKLIST_TAB:
            self.worklist.refresh()

    def _received(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        self.chooser.choose(files)
        self.case.options = tuple(case.patient_key for case in self.storage.list_cases(self.user))
        megabytes = sum(int(item["size"]) for item in files) / 1e6
        message = f"Received {len(files)} file(s), {megabytes:.1f} MB."
        if self.chooser.over_cap:
            message += (
                f" Only the first {MAX_FILES} are analysed in one batch; the other "
                f"{len(self.chooser.over_cap)} are listed below."
            )
        self.received_note = message
        self._update_analyse()

    def _next_step(self) -> str:
        missing = self.chooser.missing
        if missing:
            return f" Choose the kind of scan for {missing} PNG/JPEG file(s), then press Analyse."
        if self._needs_case():
            return " Choose or name the case (patient) the PNG/JPEG files belong to."
        return " Press Analyse."

    def _needs_case(self) -> bool:
        rasters = any(chosen.kind in ("png", "jpeg") for chosen in self.chooser.files)
        return rasters and not self.case.value.strip()

    def _update_analyse(self) -> None:
        """Enable Analyse once nothing is missing; else say what is (the next step)."""
        self.analyse.disabled = (
            not self.chooser.files or self.chooser.missing > 0 or self._needs_case()
        )
        if self.chooser.files and self.received_note:
            self.notify(self.received_note + self._next_step())

    def notify(self, message: str) -> None:
        """Show one plain sentence under the progress bar."""
        self.status.value = f"<p class='bcdiag-status'>{html.escape(message)}</p>"

    def analyse_uploads(self) -> None:
        """Analyse every chosen file, one card or reason each, with progress."""
        chosen, over_cap = self.chooser.files, self.chooser.over_cap
        if not chosen:
            self.notify("Choose one or more scans first.")
            return
        if self.chooser.missing or self._needs_case():
            self.notify(self._next_step().strip())
            return
        self.analyse.disabled = True  # no second run queued behind this one
        self.received_note = ""
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
            modality=item.stated_modality, case_name=self.case.value.strip() or None,
        )  # fmt: skip

    def _guarded(self, name: str, work: Callable[[], T]) -> T | str:
        """What `work` returns, or the sentence to show when it failed."""
        try:
            return work()
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

    def _open_exam(self, exam_id: int) -> None:
        shown = self._guarded(f"exam {exam_id}", lambda: self.exam_view.show(exam_id))
        if isinstance(shown, str):
            self.notify(shown)

    def _analyse_image(self, image: ExamImageEntry) -> str | None:
        """Analyse a stored image that has no analysis yet; None, or why it was not."""
        outcome = self._guarded(
            image.filename,
            lambda: analyse_stored(
                self.storage, self.scorer, image.scan, image.filename, user=self.user
            ),
        )
        if isinstance(outcome, AnalysisRejected):
            return outcome.message
        return outcome if isinstance(outcome, str) else None


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
