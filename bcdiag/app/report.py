"""The one-page PDF report of an analysis (reportlab).

Every text that comes from a user (file name, user name, note) is escaped before
it reaches a `Paragraph`, whose mini-markup would otherwise interpret it. The PDF
is built with reportlab's ``invariant`` mode: the same inputs give the same bytes.
"""

from __future__ import annotations

import io
from datetime import datetime
from xml.sax.saxutils import escape

from PIL import Image as PilImage
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Flowable, Image, Paragraph, SimpleDocTemplate, Spacer, Table

from bcdiag.storage.analysis_store import StoredAnalysis

DISCLAIMER = "Decision support only — not a diagnosis. Research software, not a medical device."
"""Printed on every report."""

IMAGE_SIDE = 8 * cm
SHORT_SHA = 12


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
        _images(image_png, heatmap_png, body),
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


def _images(image_png: bytes, heatmap_png: bytes, style: ParagraphStyle) -> Table:
    cells = [[_image(image_png), _image(heatmap_png)]]
    cells.append([_text("Image", style), _text("Heatmap (Grad-CAM, malignant class)", style)])
    return Table(cells, colWidths=[IMAGE_SIDE + 0.5 * cm] * 2)


def _image(png: bytes) -> Image:
    with PilImage.open(io.BytesIO(png)) as opened:
        width, height = opened.size
    scale = IMAGE_SIDE / max(width, height)
    return Image(io.BytesIO(png), width=width * scale, height=height * scale)


def _facts(
    analysis: StoredAnalysis, user: str, generated_at: datetime, style: ParagraphStyle
) -> Table:
    details = analysis.details
    point = (
        f"{analysis.call} at threshold {analysis.threshold:.3f} "
        f"(validation sensitivity {_percent(details.get('sensitivity'))}, "
        f"specificity {_percent(details.get('specificity'))})"
    )
    model = (
        f"{analysis.model_name} version {analysis.model_version} "
        f"(sha256 {analysis.model_sha256[:SHORT_SHA]})"
    )
    rows = [
        ("Probability of malignancy", _percent(analysis.probability)),
        ("Call at the operating point", point),
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
    table = Table(
        [[_text(label, style), _text(value, style)] for label, value in rows],
        colWidths=[5 * cm, 12 * cm],
    )
    table.setStyle(
        [("VALIGN", (0, 0), (-1, -1), "TOP"), ("GRID", (0, 0), (-1, -1), 0.25, colors.grey)]
    )
    return table


def _percent(value: object) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, float | int) else "not recorded"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()
