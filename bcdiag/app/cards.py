"""One analysis as a card: image with a heatmap toggle, the numbers, report, outcome.

The outcome has no default: the clinician picks one. A card of an analysis with an
outcome shows what was recorded, by whom and when; changing it asks for a
confirmation and is audited as a change (``feedback.changed``).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from datetime import UTC, datetime

import ipywidgets as widgets

from bcdiag.app.analyses import audit_report_download
from bcdiag.app.report import (
    DISCLAIMER,
    analysis_pdf,
    calibration_text,
    heatmap_note,
    image_note,
    operating_point_text,
    site_fact,
)
from bcdiag.models.calls import SUSPICIOUS
from bcdiag.storage import Storage
from bcdiag.storage.analysis_store import StoredAnalysis, StoredFeedback

OUTCOME_CHOICES = [
    ("Biopsy: malignant", "biopsy-malignant"),
    ("Biopsy: benign", "biopsy-benign"),
    ("Normal follow-up", "normal-follow-up"),
]
OUTCOME_NAMES = {value: text for text, value in OUTCOME_CHOICES}
NO_OUTCOME = "Choose the confirmed outcome…"


def recorded_html(feedback: StoredFeedback | None) -> str:
    """The recorded outcome, by whom and when, or that none is recorded yet."""
    if feedback is None:
        return "<span class='bcdiag-outcome'>No outcome recorded yet.</span>"
    return (
        f"<span class='bcdiag-outcome bcdiag-saved'>Recorded outcome: "
        f"<b>{html.escape(OUTCOME_NAMES[feedback.outcome])}</b>, by "
        f"{html.escape(feedback.user)} on {feedback.created_at:%Y-%m-%d %H:%M} UTC</span>"
    )


def summary_html(analysis: StoredAnalysis) -> str:
    """The card's text; every user-supplied value is escaped (the wording from
    `bcdiag.app.report` holds none)."""
    details = analysis.details
    call_class = "bcdiag-suspicious" if analysis.call == SUSPICIOUS else "bcdiag-clear"
    trained_at = details.get("model_trained_at")
    trained = f"trained {trained_at}" if trained_at else "training date not recorded"
    source = f" ({details['modality_source']})" if details.get("modality_source") else ""
    site = site_fact(details)
    note = image_note(details)
    site_html = "" if site is None else f"<p class='bcdiag-site'>{site[0]}: <b>{site[1]}</b></p>"
    note_html = "" if note is None else f"<p class='bcdiag-image-note'>Image {note}.</p>"
    blank = heatmap_note(details)
    if blank is not None:
        note_html += f"<p class='bcdiag-heatmap-note'>Heatmap: {blank}.</p>"
    return (
        f"<h4>{html.escape(analysis.filename)}</h4>"
        f"<p class='bcdiag-probability'>Probability of malignancy: "
        f"<b>{analysis.probability:.1%}</b> "
        f"<span class='bcdiag-calibration'>({calibration_text(details)})</span></p>"
        f"{site_html}"
        f"<p class='{call_class}'>Call: <b>{html.escape(analysis.call)}</b> "
        f"{operating_point_text(analysis)}</p>"
        f"{note_html}"
        f"<p>Modality: {html.escape(str(details.get('modality', 'unknown')))}"
        f"{html.escape(source)} · "
        f"Model: <span class='bcdiag-model'>{html.escape(analysis.model_name)} version "
        f"{html.escape(analysis.model_version)}</span>, "
        f"<span class='bcdiag-trained'>{html.escape(trained)}</span> "
        f"(sha256 {html.escape(analysis.model_sha256[:12])}) · "
        f"{analysis.created_at:%Y-%m-%d %H:%M} UTC</p>"
        f"<p class='bcdiag-disclaimer'><i>{html.escape(DISCLAIMER)}</i></p>"
    )


def rejection_widget(message: str) -> widgets.HTML:
    """A plain-language reason a file was not analysed."""
    return widgets.HTML(
        f"<div class='bcdiag-rejected'><b>Not analysed:</b> {html.escape(message)}</div>"
    )


def result_card(
    storage: Storage,
    analysis: StoredAnalysis,
    image_png: bytes,
    heatmap_png: bytes,
    *,
    user: str,
    notify: Callable[[str], None],
) -> widgets.VBox:
    """A result card wired to the storage for its report and outcome buttons."""
    picture = widgets.Image(value=heatmap_png, format="png", layout={"width": "320px"})
    toggle = widgets.ToggleButton(value=True, description="Heatmap on", icon="eye")

    def show(change: dict[str, object]) -> None:
        picture.value = heatmap_png if change["new"] else image_png
        toggle.description = "Heatmap on" if change["new"] else "Heatmap off"

    toggle.observe(show, names="value")

    report_button = widgets.Button(
        description="Prepare PDF report", icon="file-pdf-o", layout={"width": "auto"}
    )
    report_link = widgets.HTML()

    def prepare_report(_: widgets.Button) -> None:
        pdf = analysis_pdf(
            analysis, image_png, heatmap_png, user=user, generated_at=datetime.now(UTC)
        )
        audit_report_download(storage, analysis, user=user)
        encoded = base64.b64encode(pdf).decode("ascii")
        report_link.value = (
            f"<a class='bcdiag-report' download='bcdiag-analysis-{analysis.id}.pdf' "
            f"href='data:application/pdf;base64,{encoded}'>Download report (PDF)</a>"
        )

    report_button.on_click(prepare_report)

    return widgets.VBox(
        [
            widgets.HBox([picture, widgets.HTML(summary_html(analysis))]),
            widgets.HBox([toggle, report_button, report_link]),
            outcome_widget(storage, analysis, user=user, notify=notify),
        ],
        layout={"border": "1px solid #ccc", "padding": "8px", "margin": "6px 0"},
    )


def outcome_widget(
    storage: Storage, analysis: StoredAnalysis, *, user: str, notify: Callable[[str], None]
) -> widgets.VBox:
    """Record the confirmed outcome: no default, a confirmation before a change."""
    recorded = storage.latest_feedback(analysis.id, user)
    shown = widgets.HTML(recorded_html(recorded))
    choice = widgets.Dropdown(  # "" is the placeholder: a value of None would show nothing
        options=[(NO_OUTCOME, ""), *OUTCOME_CHOICES],
        value="",
        description="Outcome:",
        layout={"width": "340px"},
    )
    save = widgets.Button(
        description="Record outcome" if recorded is None else "Change outcome",
        icon="check",
        disabled=True,
    )
    confirm = widgets.Button(description="Confirm change", button_style="warning")
    cancel = widgets.Button(description="Cancel")
    question = widgets.HTML()
    confirmation = widgets.HBox([question, confirm, cancel], layout={"display": "none"})

    def chosen(change: dict[str, object]) -> None:
        save.disabled = not change["new"]
        confirmation.layout.display = "none"

    def write() -> None:
        nonlocal recorded
        recorded = storage.record_feedback(analysis.id, user, str(choice.value))
        shown.value = recorded_html(recorded)
        save.description, save.disabled = "Change outcome", True
        choice.value = ""
        confirmation.layout.display = "none"
        notify(f"Outcome recorded for {analysis.filename}.")

    def ask(_: widgets.Button) -> None:
        if recorded is None:
            write()
        elif recorded.outcome == choice.value:
            notify(f"{OUTCOME_NAMES[recorded.outcome]} is already the recorded outcome.")
        else:
            question.value = (
                f"Change the recorded outcome from <b>{OUTCOME_NAMES[recorded.outcome]}</b> "
                f"to <b>{OUTCOME_NAMES[str(choice.value)]}</b>?"
            )
            confirmation.layout.display = "flex"

    def hide(_: widgets.Button) -> None:
        confirmation.layout.display = "none"

    choice.observe(chosen, names="value")
    save.on_click(ask)
    confirm.on_click(lambda _: write())
    cancel.on_click(hide)
    return widgets.VBox([shown, widgets.HBox([choice, save]), confirmation])
