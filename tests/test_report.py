"""The PDF report: what it says, that user text stays text, and that it is reproducible."""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_inference import breastmnist_png

from bcdiag.app.report import DISCLAIMER, analysis_pdf
from bcdiag.storage.analysis_store import StoredAnalysis

HOSTILE_NAME = "<b>x</b>&.png"
GENERATED_AT = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)

_STREAM = re.compile(rb"<<([^>]*)>>\s*stream\r?\n(.*?)endstream", re.S)
_SHOWN = re.compile(rb"\(((?:[^\\)]|\\.)*)\) Tj|(T\*)", re.S)
_ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.S)


def pdf_text(pdf: bytes) -> str:
    """The text shown by reportlab's content streams, one line per text line."""
    lines: list[str] = []
    for header, data in _STREAM.findall(pdf):
        if b"ASCII85Decode" in header:
            data = base64.a85decode(data.strip().removesuffix(b"~>"))
        if b"FlateDecode" in header:
            data = zlib.decompress(data)
        current = b""
        for shown, newline in _SHOWN.findall(data):
            if newline:
                lines.append(current.decode("cp1252"))
                current = b""
            else:
                current += _ESCAPE.sub(_unescape, shown)
    return "\n".join(lines)


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    return bytes([int(code, 8)]) if code[:1].isdigit() else code


@pytest.fixture(scope="module")
def images(data_dir: Path) -> tuple[bytes, bytes]:
    return breastmnist_png(data_dir, 0), breastmnist_png(data_dir, 1)


@pytest.fixture
def analysis() -> StoredAnalysis:
    return StoredAnalysis(
        id=7,
        scan_id=3,
        scan_sha256="a" * 64,
        user="alice",
        created_at=datetime(2026, 11, 27, 9, 15, tzinfo=UTC),
        model_name="bcdiag-us",
        model_version="12",
        model_sha256="0123456789abcdef" * 4,
        probability=0.734,
        threshold=0.41,
        call="suspicious",
        heatmap_blob_key="sha256/bb/" + "b" * 64,
        details={
            "filename": HOSTILE_NAME,
            "sensitivity": 0.9,
            "specificity": 0.625,
            "modality": "US",
        },
    )


def test_report_states_result_model_user_and_disclaimer(
    analysis: StoredAnalysis, images: tuple[bytes, bytes]
) -> None:
    pdf = analysis_pdf(analysis, *images, user="alice", generated_at=GENERATED_AT)
    assert pdf.startswith(b"%PDF")
    lines = pdf_text(pdf).splitlines()
    assert DISCLAIMER in lines
    assert HOSTILE_NAME in lines  # shown literally, not interpreted as markup
    for expected in (
        "73.4%",
        "US",
        "bcdiag-us version 12 (sha256 0123456789ab)",
        "2026-11-27 09:15 UTC",
        "2026-11-27 09:30 UTC by alice",
    ):
        assert expected in lines
    text = " ".join(lines)
    assert (
        "suspicious at threshold 0.410 on the score (sensitivity 90.0%, specificity 62.5% on "
        "validation)" in text
    )
    assert "score calibrated to the training set, whose share of malignant images is not" in text
    assert "site's prevalence" not in text
    assert "Model trained" not in text
    assert pdf.count(b"/Subtype /Image") == 2


def test_report_shows_the_training_date_when_recorded(
    analysis: StoredAnalysis, images: tuple[bytes, bytes]
) -> None:
    dated = replace(analysis, details={**analysis.details, "model_trained_at": "2026-11-20"})
    lines = pdf_text(analysis_pdf(dated, *images, user="bob", generated_at=GENERATED_AT))
    assert "Model trained\n2026-11-20" in lines


def test_same_inputs_give_the_same_bytes(
    analysis: StoredAnalysis, images: tuple[bytes, bytes]
) -> None:
    first = analysis_pdf(analysis, *images, user="alice", generated_at=GENERATED_AT)
    assert analysis_pdf(analysis, *images, user="alice", generated_at=GENERATED_AT) == first
