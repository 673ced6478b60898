"""The worklist: the clinician's exams, sorted, filtered and paged, one line each.

The list is a native select box, so the arrow keys move to the next or previous exam
(and open it) once it has the focus; a click opens one too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from bcdiag.storage import Storage
from bcdiag.storage.models import EXAM_STATES
from bcdiag.storage.worklist import ExamSummary, WorklistSort

PAGE_SIZE = 50
SORTS: list[tuple[str, WorklistSort]] = [
    ("Exam date", "date"),
    ("Patient", "patient"),
    ("State", "state"),
    ("Score", "score"),
    ("Last activity", "activity"),
]
ANY_STATE = ""


def exam_line(exam: ExamSummary) -> str:
    """One exam as the list shows it (plain text: a select box shows no markup)."""
    patient = exam.patient_key
    if exam.patient_name:
        patient += f" ({exam.patient_name.replace('^', ' ')})"
    score = "no score" if exam.score is None else f"{exam.score:.1%}"
    return (
        f"{exam.exam_date:%Y-%m-%d} · {patient} · {exam.modality or '?'} · {score} · "
        f"{exam.state} · {exam.image_count} image(s)"
    )


class WorklistView:
    """Filters, the page of exams and the pager; choosing an exam calls `open_exam`."""

    def __init__(self, storage: Storage, user: str, open_exam: Callable[[int], None]) -> None:
        self.storage, self.user, self.open_exam = storage, user, open_exam
        self.offset = 0
        narrow = {"description_width": "initial"}
        self.patient = widgets.Text(
            placeholder="Patient ID or name contains…", layout={"width": "100%"}
        )
        self.state = widgets.Dropdown(
            options=[("Any state", ANY_STATE), *((s.capitalize(), s) for s in EXAM_STATES)],
            value=ANY_STATE, layout={"width": "50%"},
        )  # fmt: skip
        self.min_score = widgets.BoundedFloatText(
            value=0.0, min=0.0, max=100.0, step=5.0, description="Score ≥ %",
            style=narrow, layout={"width": "50%"},
        )  # fmt: skip
        self.date_from = widgets.DatePicker(description="From", style=narrow)
        self.date_to = widgets.DatePicker(description="To", style=narrow)
        self.sort = widgets.Dropdown(
            options=SORTS, value="date", description="Sort", style=narrow,
            layout={"width": "60%"},
        )  # fmt: skip
        self.descending = widgets.Checkbox(value=True, description="Descending", indent=False)
        refresh = widgets.Button(icon="refresh", tooltip="Read the worklist again")
        refresh.layout = widgets.Layout(width="40px")
        self.exams = widgets.Select(options=[], rows=18, layout={"width": "100%"})
        self.count = widgets.HTML()
        self.previous = widgets.Button(icon="chevron-left", tooltip="Previous page")
        self.next = widgets.Button(icon="chevron-right", tooltip="Next page")
        for button in (self.previous, self.next):
            button.layout = widgets.Layout(width="40px")
        filters = (self.patient, self.state, self.min_score, self.date_from, self.date_to)
        for control in (*filters, self.sort, self.descending):
            control.observe(lambda _: self.refresh(first_page=True), names="value")
        refresh.on_click(lambda _: self.refresh())
        self.previous.on_click(lambda _: self._page(-1))
        self.next.on_click(lambda _: self._page(+1))
        self.exams.observe(self._chosen, names="value")
        self.widget = widgets.VBox(
            [
                self.patient,
                widgets.HBox([self.state, self.min_score]),
                widgets.HBox([self.date_from, self.date_to], layout={"flex_flow": "row wrap"}),
                widgets.HBox([self.sort, self.descending, refresh]),
                self.exams,
                widgets.HBox([self.previous, self.next, self.count]),
            ],
            layout={"flex": "0 0 490px", "min_width": "360px", "padding": "0 8px 0 0"},
        )

    def refresh(self, first_page: bool = False) -> None:
        """List the current page again (the first one after a filter changed)."""
        if first_page:
            self.offset = 0
        page = self.storage.worklist(
            self.user,
            sort=self.sort.value,
            descending=self.descending.value,
            patient=self.patient.value.strip() or None,
            state=self.state.value or None,
            date_from=self.date_from.value,
            date_to=self.date_to.value,
            min_score=(self.min_score.value / 100) or None,
            offset=self.offset,
            limit=PAGE_SIZE,
        )
        chosen = self.exams.value
        options = [(exam_line(exam), exam.id) for exam in page.rows]
        with self.exams.hold_trait_notifications():
            self.exams.options = options
            self.exams.value = chosen if chosen in {i for _, i in options} else None
        last = self.offset + len(page.rows)
        self.count.value = (
            f"<span class='bcdiag-worklist-count'>Exams {self.offset + 1}–{last} of "
            f"{page.total}</span>"
            if page.total
            else "<span class='bcdiag-worklist-count'>No exams match.</span>"
        )
        self.previous.disabled = self.offset == 0
        self.next.disabled = last >= page.total

    def _page(self, step: int) -> None:
        self.offset = max(0, self.offset + step * PAGE_SIZE)
        self.refresh()

    def _chosen(self, change: dict[str, Any]) -> None:
        if change["new"] is not None and change["new"] != change["old"]:
            self.open_exam(int(change["new"]))
