"""One analysis as a card: image with a heatmap toggle, the numbers, report, outcome."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from datetime import UTC, datetime

import ipywidgets as widgets

from bcdiag.app.analyses import AnalysisRejected, audit_report_download
from bcdiag.app.report import DISCLAIMER, analysis_pdf
from bcdiag.models.bundle import SUSPICIOUS
from bcdiag.storage import Storage
from bcdiag.storage.analysis_store import StoredAnalysis

OUTCOME_CHOICES = [
    ("Biopsy: malignant", "biopsy-malignant"),
    ("Biopsy: benign", "biopsy-benign"),
    ("Normal follow-up", "normal-follow-up"),
]


def summary_html(analysis: StoredAnalysis) -> str:
    """The card's text; every user-supplied value is escaped."""
    details = analysis.details
    call_class = "bcdiag-suspicious" if analysis.call == SUSPICIOUS else "bcdiag-clear"
    trained_at = details.get("model_trained_at")
    trained = f"trained {trained_at}" if trained_at else "training date not recorded"
    return (
        f"<h4>{html.escape(analysis.filename)}</h4>"
        f"<p class='bcdiag-probability'>Probability of malignancy: "
        f"<b>{analysis.probability:.1%}</b></p>"
        f"<p class='{call_class}'>Call: <b>{html.escape(analysis.call)}</b> at threshold "
        f"{analysis.threshold:.3f} (validation sensitivity "
        f"{float(details.get('sensitivity', float('nan'))):.0%}, specificity "
        f"{float(details.get('specificity', float('nan'))):.0%})</p>"
        f"<p>Modality: {html.escape(str(details.get('modality', 'unknown')))} · "
        f"Model: <span class='bcdiag-model'>{html.escape(analysis.model_name)} version "
        f"{html.escape(analysis.model_version)}</span>, "
        f"<span class='bcdiag-trained'>{html.escape(trained)}</span> "
        f"(sha256 {html.escape(analysis.model_sha256[:12])}) · "
        f"{analysis.created_at:%Y-%m-%d %H:%M} UTC</p>"
        f"<p class='bcdiag-disclaimer'><i>{html.escape(DISCLAIMER)}</i></p>"
    )


def rejection_widget(rejection: AnalysisRejected) -> widgets.HTML:
    """A plain-language reason a file was not analysed."""
    return widgets.HTML(
        f"<div class='bcdiag-rejected'><b>Not analysed:</b> {html.escape(rejection.message)}</div>"
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

    report_button = widgets.Button(description="Prepare PDF report", icon="file-pdf-o")
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

    outcome = widgets.Dropdown(options=OUTCOME_CHOICES, description="Outcome:")
    save = widgets.Button(description="Record outcome", icon="check")
    saved = widgets.HTML()

    def record(_: widgets.Button) -> None:
        feedback = storage.record_feedback(analysis.id, user, str(outcome.value))
        label = dict((value, text) for text, value in OUTCOME_CHOICES)[feedback.outcome]
        saved.value = f"<span class='bcdiag-saved'>Recorded: {html.escape(label)}</span>"
        notify(f"Outcome recorded for analysis {analysis.id}.")

    save.on_click(record)
    return widgets.VBox(
        [
            widgets.HBox([picture, widgets.HTML(summary_html(analysis))]),
            widgets.HBox([toggle, report_button, report_link]),
            widgets.HBox([outcome, save, saved]),
        ],
        layout={"border": "1px solid #ccc", "padding": "8px", "margin": "6px 0"},
    )
