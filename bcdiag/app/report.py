"""The PDF reports (reportlab): one analysis on a page, and one exam with its patient
and study identifiers and each image; and the wording about what the
score means that the report and the card share.

Every text that comes from a user (file name, user name, note) is escaped before
it reaches a `Paragraph`, whose mini-markup would otherwise interpret it. The PDF
is built with reportlab's ``invariant`` mode: the same inputs give the same bytes.

A model's score is calibrated to its training set (rsna640's mammograms: 34% malignant,
BreastMNIST: 27%; screening: under 1%), so both say so; where the site set its prevalence
(``BCDIAG_PREVALENCE_MG`` / ``_US``), the probability at it is shown as well, and the
call, made at the validated threshold on the score, is said not to change with it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image as PilImage
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Flowable, Image, Paragraph, SimpleDocTemplate, Spacer, Table

from bcdiag.app.hanging import label
from bcdiag.storage.analysis_store import StoredAnalysis
from bcdiag.storage.worklist import ExamDetail, ExamImageEntry

DISCLAIMER = "Decision support only — not a diagnosis. Research software, not a medical device."
"""Printed on every report."""

IMAGE_SIDE = 8 * cm
SHORT_SHA = 12
CALL_UNCHANGED = "the call does not change with the site's prevalence"
"""Said wherever a probability at the site's prevalence is shown."""


def calibration_text(details: Mapping[str, Any]) -> str:
    """What the probability is calibrated to, from an analysis's ``details``."""
    trained = details.get("training_prevalence")
    if not isinstance(trained, float | int):
        return (
            "score calibrated to the training set, whose share of malignant images is not recorded"
        )
    return f"score calibrated to the training set, {percent(trained)} malignant"


def site_fact(details: Mapping[str, Any]) -> tuple[str, str] | None:
    """The probability at the site's prevalence as (label, value); None when the site
    set no prevalence for the modality."""
    site = details.get("site_prevalence")
    if not isinstance(site, float | int):
        return None
    label = f"Probability at this site's prevalence ({percent(site)})"
    at_site = details.get("probability_at_site_prevalence")
    if not isinstance(at_site, float | int):
        return label, "not available: this model did not record its training prevalence"
    return label, percent(at_site)


def image_note(details: Mapping[str, Any]) -> str | None:
    """How the image is shown when that differs from the file: None when it does not."""
    if not details.get("shown_inverted"):
        return None
    return "shown as mammograms are read, bright tissue on dark; the file stores it inverted"


def heatmap_note(details: Mapping[str, Any]) -> str | None:
    """Why the heatmap has no colour, when it has none: None otherwise."""
    if details.get("heatmap_blank") is not True:
        return None
    return (
        "no region raised the malignancy score enough to be coloured; "
        "a blank heatmap is not a finding"
    )


def operating_point_text(analysis: StoredAnalysis) -> str:
    """What the call is made at: the threshold on the score and its operating point on
    validation (and, where the site set its prevalence, that the call ignores it)."""
    details = analysis.details
    text = (
        f"at threshold {analysis.threshold:.3f} on the score "
        f"(sensitivity {percent(details.get('sensitivity'))}, "
        f"specificity {percent(details.get('specificity'))} on validation)"
    )
    return f"{text}; {CALL_UNCHANGED}" if site_fact(details) is not None else text


def percent(value: object) -> str:
    """A share as a percentage (two significant digits under 1%), or "not recorded"."""
    if not isinstance(value, float | int) or math.isnan(value):
        return "not recorded"
    return f"{100 * value:.1f}%" if value == 0 or value >= 0.01 else f"{100 * value:.2g}%"


def analysis_pdf(
    analysis: StoredAnalysis,
    image_png: bytes,
    heatmap_png: bytes,
    *,
    user: str,
    generated_at: datetime,
) -> bytes:
    """The report: image and heatmap side by side, the numbers, the model, the disclaimer.

    Args:
        analysis: the stored analysis (its ``details`` may hold ``model_trained_at``).
        image_png: the scan as shown to the clinician.
        heatmap_png: the heatmap overlay.
        user: who asked for the report.
        generated_at: when; printed, so pass an aware datetime.
    """
    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title="bcdiag analysis report",
        author="bcdiag",
        invariant=1,
        leftMargin=2 * cm,
        rightMargin=2 * cm,
        topMargin=2 * cm,
        bottomMargin=2 * cm,
    )
    story: list[Flowable] = [
        Paragraph("Breast scan analysis report", styles["Title"]),
        _text(analysis.filename or f"scan {analysis.scan_sha256[:SHORT_SHA]}", styles["Heading3"]),
        _images(image_png, heatmap_png, analysis.details, body),
        Spacer(1, 0.5 * cm),
        _facts(analysis, user, generated_at, body),
        Spacer(1, 0.8 * cm),
        _text(DISCLAIMER, ParagraphStyle("disclaimer", parent=body, fontName="Helvetica-Bold")),
    ]
    document.build(story)
    return buffer.getvalue()


def _text(value: str, style: ParagraphStyle) -> Paragraph:
    """A paragraph showing ``value`` literally (no markup is interpreted)."""
    return Paragraph(escape(value), style)


def _images(
    image_png: bytes, heatmap_png: bytes, details: Mapping[str, Any], style: ParagraphStyle
) -> Table:
    note = image_note(details)
    caption = "Image" if note is None else f"Image ({note})"
    cells = [[_image(image_png), _image(heatmap_png)]]
    heat = "Heatmap (Grad-CAM, malignant class)"
    blank = heatmap_note(details)
    heat_caption = heat if blank is None else f"{heat}: {blank}"
    cells.append([_text(caption, style), _text(heat_caption, style)])
    return Table(cells, colWidths=[IMAGE_SIDE + 0.5 * cm] * 2)


def _image(png: bytes, side: float = IMAGE_SIDE) -> Image:
    with PilImage.open(io.BytesIO(png)) as opened:
        width, height = opened.size
    scale = side / max(width, height)
    return Image(io.BytesIO(png), width=width * scale, height=height * scale)


def _facts(
    analysis: StoredAnalysis, user: str, generated_at: datetime, style: ParagraphStyle
) -> Table:
    details = analysis.details
    model = (
        f"{analysis.model_name} version {analysis.model_version} "
        f"(sha256 {analysis.model_sha256[:SHORT_SHA]})"
    )
    site = site_fact(details)
    rows = [
        ("Probability of malignancy", percent(analysis.probability)),
        ("What the probability is", calibration_text(details)),
        *([site] if site is not None else []),
        ("Call at the operating point", f"{analysis.call} {operating_point_text(analysis)}"),
        ("Modality", str(details.get("modality", "unknown"))),
        ("Model", model),
    ]
    trained_at = details.get("model_trained_at")
    if trained_at is not None:
        rows.append(("Model trained", str(trained_at)))
    rows += [
        ("Analysed", _when(analysis.created_at)),
        ("Analysed by", analysis.user),
        ("Report generated", f"{_when(generated_at)} by {user}"),
    ]
    return _grid(rows, style)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


EXAM_IMAGE_SIDE = 7.5 * cm


def exam_pdf(
    detail: ExamDetail,
    overlays: Mapping[int, bytes],
    *,
    score_rule: str,
    user: str,
    generated_at: datetime,
) -> bytes:
    """The report of one exam: the patient and study, the exam score and its rule, then
    each analysed image with its heatmap overlay, score, call and model.

    Args:
        detail: the exam and its images, in the order they are hung.
        overlays: each analysed image's heatmap overlay PNG, by scan id.
        score_rule: how the exam score is made from the images' scores.
        user: who asked for the report.
        generated_at: when; printed, so pass an aware datetime.
    """
    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    exam = detail.exam
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, title="bcdiag exam report", author="bcdiag", invariant=1,
        leftMargin=2 * cm, rightMargin=2 * cm, topMargin=1.5 * cm, bottomMargin=1.5 * cm,
    )  # fmt: skip
    scores = [i.analysis.probability for i in detail.images if i.analysis is not None]
    identity = [
        ("Patient", exam.patient_key),
        ("Patient name", (exam.patient_name or "not recorded").replace("^", " ")),
        ("Study date", f"{exam.exam_date:%Y-%m-%d}"),
        ("Study", exam.study_description or "not recorded"),
        ("Accession number", exam.accession_number or "not recorded"),
        ("Study Instance UID", exam.study_instance_uid or "none (images named by the case)"),
        ("Modality", exam.modality or "unknown"),
        ("Exam score", f"{percent(max(scores))} ({score_rule})" if scores else "not analysed"),
        ("Report generated", f"{_when(generated_at)} by {user}"),
    ]
    story: list[Flowable] = [
        Paragraph("Breast exam analysis report", styles["Title"]),
        _grid(identity, body),
        Spacer(1, 0.4 * cm),
    ]
    cells: list[Any] = [_exam_image(i, overlays.get(i.scan.id), body) for i in detail.images]
    cells += [""] * (len(cells) % 2)  # two images a row
    rows = [cells[i : i + 2] for i in range(0, len(cells), 2)]
    story += [
        Table(rows, colWidths=[EXAM_IMAGE_SIDE + 1 * cm] * 2),
        Spacer(1, 0.4 * cm),
        _text(DISCLAIMER, ParagraphStyle("disclaimer", parent=body, fontName="Helvetica-Bold")),
    ]
    document.build(story)
    return buffer.getvalue()


def _exam_image(image: ExamImageEntry, overlay: bytes | None, style: ParagraphStyle) -> list[Any]:
    name = label(image)
    analysis = image.analysis
    if analysis is None or overlay is None:
        return [_text(f"{name} ({image.filename}): not analysed", style)]
    facts = (
        f"{name} ({image.filename}): {percent(analysis.probability)}, {analysis.call} "
        f"{operating_point_text(analysis)}. Model {analysis.model_name} version "
        f"{analysis.model_version} (sha256 {analysis.model_sha256[:SHORT_SHA]})."
    )
    return [_image(overlay, EXAM_IMAGE_SIDE), _text(facts, style)]


def _grid(rows: list[tuple[str, str]], style: ParagraphStyle) -> Table:
    table = Table(
        [[_text(label, style), _text(value, style)] for label, value in rows],
        colWidths=[5 * cm, 12 * cm],
    )
    table.setStyle(
        [("VALIGN", (0, 0), (-1, -1), "TOP"), ("GRID", (0, 0), (-1, -1), 0.25, colors.grey)]
    )
    return table
