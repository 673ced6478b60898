"""The exam view: one exam's images, each at full resolution in a `ScanViewer`, hung as
radiologists read them, with the exam score and each image's result beneath it.

The model's heat is off by default; one row of controls switches it (outline or heat)
and sets its opacity on every image at once. Each image loads in turn, so the first
appears while the others are still read.
"""

from __future__ import annotations

import base64
import html
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import ipywidgets as widgets

from bcdiag.app.analyses import audit_view
from bcdiag.app.cards import outcome_widget
from bcdiag.app.hanging import (
    EXAM_SCORE_RULE,
    HANGING,
    exam_score,
    facing,
    hung,
    in_hanging_order,
    label,
)
from bcdiag.app.report import exam_pdf, heatmap_note
from bcdiag.app.secondary_capture import exam_secondary_captures
from bcdiag.app.viewer import ScanViewer
from bcdiag.errors import BcdiagError
from bcdiag.models.calls import SUSPICIOUS
from bcdiag.scans.display import display_pixels
from bcdiag.serving.results import HEAT_FLOOR, heat_from_png
from bcdiag.storage import Storage
from bcdiag.storage.worklist import ExamDetail, ExamImageEntry, ExamSummary

log = logging.getLogger(__name__)

NO_HEAT = "no region marked"  # its heatmap stayed below the marking level
VIEWER_HEIGHT = "max(200px, 30vh)"  # two rows of views and their captions on a 768-px screen


def exam_header_html(exam: ExamSummary, images: list[ExamImageEntry]) -> str:
    """Who and what: the case's identifiers, the study, and the exam score with its rule."""
    patient = html.escape(exam.patient_key)
    if exam.patient_name:
        patient += f" · {html.escape(exam.patient_name.replace('^', ' '))}"
    study = [f"{exam.exam_date:%Y-%m-%d}", exam.modality or "modality unknown"]
    study += [text for text in (exam.study_description, exam.accession_number) if text]
    score = exam_score(images)
    if score is None:
        verdict = "<b>not analysed yet</b>"
    else:
        calls = [i.analysis.call for i in images if i.analysis is not None]
        call = SUSPICIOUS if SUSPICIOUS in calls else calls[0]
        verdict = (
            f"<b>{score:.1%}</b> ({EXAM_SCORE_RULE}) · "
            f"<b class='bcdiag-exam-call'>{html.escape(call)}</b>"
        )
    return (
        f"<div class='bcdiag-exam-header' style='line-height:1.4'>"
        f"<h3 style='margin:0'>{patient}</h3>"
        f"<div>{' · '.join(html.escape(part) for part in study)} · {len(images)} image(s)</div>"
        f"<div class='bcdiag-exam-score'>Exam score: {verdict}</div></div>"
    )


def image_caption_html(
    image: ExamImageEntry, mirrored: bool = False, css_class: str = "bcdiag-view-caption"
) -> str:
    """One image's result as a line (and whether it is shown mirrored); an image whose
    heatmap has no region to colour or outline says so, so an empty overlay is not taken
    for one still loading."""
    name = html.escape(label(image)) + (" (mirrored)" if mirrored else "")
    analysis = image.analysis
    if analysis is None:
        return f"<div class='{css_class}'><b>{name}</b> · not analysed</div>"
    blank = heatmap_note(analysis.details)
    note = (
        ""
        if blank is None
        else f" · <span class='bcdiag-heat-blank' title='{html.escape(blank)}'>{NO_HEAT}</span>"
    )
    return (
        f"<div class='{css_class}'><b>{name}</b> · {analysis.probability:.1%} · "
        f"{html.escape(analysis.call)} at {analysis.threshold:.3f} · "
        f"{html.escape(analysis.model_name)} v{html.escape(analysis.model_version)}{note}</div>"
    )


class _Superseded(Exception):
    """Another exam was shown while this one's images were loading."""


def _release(viewer: ScanViewer, link: Any, browser_link: widgets.Link) -> None:
    """Unlink a viewer from the overlay controls and close it (its pixels can go)."""
    link.unlink()
    browser_link.close()
    viewer.close()


def _name(item: ExamImageEntry | str) -> str:
    return item if isinstance(item, str) else label(item)


class ExamView:
    """The right-hand side of the worklist: `show` builds one exam."""

    def __init__(
        self,
        storage: Storage,
        user: str,
        notify: Callable[[str], None],
        analyse_later: Callable[[ExamImageEntry], str | None],
    ) -> None:
        self.storage, self.user, self.notify = storage, user, notify
        self.analyse_later = analyse_later
        # the shown exam's viewers with their links to the overlay controls (released,
        # and their pixels freed, when another exam is shown)
        self._viewers: list[tuple[ScanViewer, Any, widgets.Link]] = []
        self._lock = threading.Lock()  # the loader thread and the kernel's own
        self.header = widgets.HTML("<p>Choose an exam in the worklist.</p>")
        self.overlay = widgets.ToggleButtons(
            options=[("Off", "off"), ("Outline", "outline"), ("Heat", "heat")],
            value="off",
            description="Overlay",
            style={"description_width": "initial", "button_width": "80px"},
            tooltips=["No overlay", "Outline of the region the model looked at", "Heat map"],
        )
        self.opacity = widgets.FloatSlider(
            value=0.5, min=0.1, max=1.0, step=0.05, description="Opacity",
            style={"description_width": "initial"}, layout={"width": "240px"},
        )  # fmt: skip
        self.images = widgets.GridBox()
        self.results = widgets.VBox()
        report = widgets.Button(
            description="Prepare exam report", icon="file-pdf-o", layout={"width": "auto"}
        )
        report.on_click(lambda _: self.prepare_report())
        self.report_link = widgets.HTML()
        # Controls and the outcomes heading wait for an exam: with none shown they act on nothing.
        hidden = {"display": "none"}
        self.controls = widgets.HBox(
            [self.overlay, self.opacity, report, self.report_link], layout=hidden
        )
        self.outcomes_heading = widgets.HTML("<h4>Outcomes</h4>", layout=hidden)
        self.widget = widgets.VBox(
            [self.header, self.controls, self.images, self.outcomes_heading, self.results],
            layout={"flex": "1 1 auto", "min_width": "0"},
        )
        self.shown: ExamDetail | None = None
        self.generation = 0  # counts exams shown: a loader of an earlier one stops
        self.loader: threading.Thread | None = None  # reads the shown exam's images

    def show(self, exam_id: int) -> None:
        """Show exam ``exam_id`` of this user (audited as a view)."""
        detail = self.storage.exam(self.user, exam_id)
        self.shown = detail
        self.storage.record_audit(user=self.user, action="exam.viewed", target=f"exam:{exam_id}")
        for image in detail.images:
            if image.analysis is not None:
                audit_view(self.storage, image.analysis, user=self.user)
        self.header.value = exam_header_html(detail.exam, detail.images)
        self.report_link.value = ""
        self.controls.layout.display = self.outcomes_heading.layout.display = None
        mammography = detail.exam.modality == "MG"
        slots, rest = hung(detail.images) if mammography else ({}, detail.images)
        # Mammograms without views are shown in a row, as other images are.
        order: list[ExamImageEntry | str] = (
            [slots.get(name, name) for name in HANGING] if slots else []
        )
        order += rest
        columns = "1fr 1fr" if mammography and slots else "repeat(auto-fill, minmax(300px, 1fr))"
        self.images.layout = widgets.Layout(grid_template_columns=columns, grid_gap="6px")
        self.results.children = tuple(
            self._result(image) for image in order if not isinstance(image, str)
        )
        placeholders = tuple(
            widgets.HTML(f"<div class='bcdiag-loading'>{html.escape(_name(item))}: loading…</div>")
            for item in order
        )
        with self._lock:
            self.generation += 1
            generation, released, self._viewers = self.generation, self._viewers, []
            self.images.children = placeholders
        for viewer, link, browser_link in released:
            _release(viewer, link, browser_link)
        # Loaded in a thread: the kernel must stay free to answer the first viewer's
        # requests for pixels while the next images are still being read.
        self.loader = threading.Thread(
            target=self._load, args=(order, generation), name="exam-images", daemon=True
        )
        self.loader.start()

    @property
    def viewers(self) -> list[ScanViewer]:
        """The shown exam's viewers, in the order they were drawn."""
        with self._lock:
            return [viewer for viewer, _, _ in self._viewers]

    def _load(self, order: list[ExamImageEntry | str], generation: int) -> None:
        """Replace each placeholder by its image, in order, unless another exam was opened."""
        for index, item in enumerate(order):
            if generation != self.generation:
                return
            try:
                cell = self._cell(item, generation)
            except _Superseded:
                return
            except Exception:  # a failure in this thread must reach the screen, not vanish
                log.exception("showing an image of exam failed")
                cell = widgets.HTML(
                    f"<p>{html.escape(_name(item))}: this image could not be shown; "
                    "please reopen the exam or contact support.</p>"
                )
            with self._lock:
                if generation != self.generation:
                    return
                cells = list(self.images.children)
                cells[index] = cell
                self.images.children = tuple(cells)

    def prepare_report(self) -> None:
        """Offer the shown exam's PDF report and its DICOM Secondary Capture images for
        download (audited)."""
        if self.shown is None:
            return
        detail = replace(self.shown, images=in_hanging_order(self.shown.images))
        overlays = {
            image.scan.id: png
            for image in detail.images
            if image.analysis is not None and (png := self.storage.heatmap_png(image.analysis))
        }
        now = datetime.now(UTC)
        pdf = exam_pdf(
            detail, overlays, score_rule=EXAM_SCORE_RULE, user=self.user, generated_at=now
        )
        captures = exam_secondary_captures(detail, overlays, created_at=now)
        exam_id = detail.exam.id
        self.storage.record_audit(
            user=self.user, action="report.downloaded", target=f"exam:{exam_id}"
        )
        self.report_link.value = " · ".join(
            f"<a class='bcdiag-report' download='bcdiag-exam-{exam_id}.{suffix}' "
            f"href='data:{kind};base64,{base64.b64encode(data).decode('ascii')}'>{text}</a>"
            for suffix, kind, data, text in (
                ("pdf", "application/pdf", pdf, "Download exam report (PDF)"),
                ("zip", "application/zip", captures, "DICOM Secondary Capture (ZIP)"),
            )
        )

    def _cell(self, item: ExamImageEntry | str, generation: int) -> widgets.Widget:
        """An image and its one-line result (outcomes go below the hanging)."""
        if isinstance(item, str):
            return widgets.HTML(
                f"<div class='bcdiag-empty-slot'>{item}: no such view in this exam</div>"
            )
        try:
            viewer, mirrored = self._viewer(item, generation)
        except BcdiagError as error:
            caption = widgets.HTML(image_caption_html(item))
            return widgets.VBox([caption, widgets.HTML(f"<p>{html.escape(str(error))}</p>")])
        caption = widgets.HTML(image_caption_html(item, mirrored))
        return widgets.VBox([viewer, caption], layout={"min_width": "0"})

    def _result(self, item: ExamImageEntry) -> widgets.Widget:
        """Under the hanging: an image's outcome to record, or its analysis to run."""
        caption = widgets.HTML(image_caption_html(item, css_class="bcdiag-result-caption"))
        if item.analysis is not None:
            recorded = outcome_widget(
                self.storage, item.analysis, user=self.user, notify=self.notify
            )
            return widgets.VBox([caption, recorded])
        analyse = widgets.Button(description="Analyse now", icon="play")

        def run(_: widgets.Button) -> None:
            analyse.disabled = True
            message = self.analyse_later(item)
            if message is not None:
                self.notify(message)
                analyse.disabled = False
            elif self.shown is not None:
                self.show(self.shown.exam.id)

        analyse.on_click(run)
        return widgets.HBox([caption, analyse])

    def _viewer(self, item: ExamImageEntry, generation: int) -> tuple[ScanViewer, bool]:
        """The image's viewer, and whether it is mirrored for hanging.

        Raises:
            _Superseded: another exam was shown meanwhile (the viewer is released).
        """
        data = self.storage.scan_bytes(item.scan)  # its hash checked: the bytes judged at upload
        original = display_pixels(data, item.filename, accepted=item.scan.metadata)
        heat_key = None if item.analysis is None else item.analysis.details.get("heat_sha256")
        heat = None if heat_key is None else heat_from_png(self.storage.blobs.get(heat_key))
        image, heat = facing(original, heat, item.laterality)
        viewer = ScanViewer(image, heat, layout=widgets.Layout(width="100%", height=VIEWER_HEIGHT))
        viewer.outline_level = HEAT_FLOOR
        link = widgets.link((self.overlay, "value"), (viewer, "overlay"))
        browser_link = widgets.jslink((self.opacity, "value"), (viewer, "opacity"))
        with self._lock:
            current = generation == self.generation
            if current:
                self._viewers.append((viewer, link, browser_link))
        if not current:
            _release(viewer, link, browser_link)
            raise _Superseded
        return viewer, image is not original
