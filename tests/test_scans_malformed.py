"""Each malformed file of the generated corpus is rejected with its own code."""

from __future__ import annotations

from pathlib import Path

import pytest
from scan_corpus import Case, build_corpus

from bcdiag.scans import judge

CASE_IDS = [
    "empty.dcm", "random.dcm", "notes.png", "mdb001.dcm", "mammogram.png", "no_preamble.dcm",
    "truncated.dcm", "lying.dcm", "nested300.dcm", "nested40.dcm", "corrupt_j2k.dcm",
    "bomb.png", "DICOMDIR", "ct.dcm", "mr.dcm", "blank.dcm", "spot.dcm", "multi.dcm",
    "raw.dcm", "tiny.dcm", "tiny.png", "sr.dcm", "no_pixels.dcm", "cut_rle.dcm",
    "cut_in_header.dcm", "jpeg12.dcm", "cut.png",
    "window0.dcm",
    "photo.png", "rows0.dcm", "odd_length.dcm", "headerless.dcm",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """The corpus of `tests.scan_corpus`, built once for this module."""
    return build_corpus(data_dir, tmp_path_factory.mktemp("fileset"))


def test_every_case_is_listed(corpus: dict[str, Case]) -> None:
    assert sorted(corpus) == sorted(CASE_IDS)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_case_gets_its_verdict(corpus: dict[str, Case], case_id: str) -> None:
    case = corpus[case_id]
    verdict = judge(case.data, case.name, modality=case.modality)
    assert (verdict.code, verdict.ok) == (case.code, case.code is None), verdict.message
    assert verdict.message.startswith(f"{case.name}: ")
    assert verdict.message.isprintable()
    assert (verdict.scan is not None) == verdict.ok


def test_cut_off_and_pixel_less_dicoms_say_which(corpus: dict[str, Case]) -> None:
    """A cut-off mammogram is not "a file without an image", and the other way round."""
    cut_off = "the DICOM file is cut off: it ends in the middle of its data."
    for case_id in ("truncated.dcm", "cut_rle.dcm", "cut_in_header.dcm"):
        verdict = judge(corpus[case_id].data, case_id)
        assert verdict.message.startswith(f"{case_id}: {cut_off}"), verdict.message
    verdict = judge(corpus["no_pixels.dcm"].data, "no_pixels.dcm")
    assert verdict.message.startswith(
        "no_pixels.dcm: this DICOM file holds no image (no Pixel Data)"
    ), verdict.message


def test_mr_message_says_no_model_yet(corpus: dict[str, Case]) -> None:
    verdict = judge(corpus["mr.dcm"].data, "mr.dcm")
    assert "no model for MR yet" in verdict.message


def test_other_modality_is_named(corpus: dict[str, Case]) -> None:
    verdict = judge(corpus["ct.dcm"].data, "scan_01.dcm")
    assert verdict.message == (
        "scan_01.dcm: this DICOM file is modality CT; bcdiag analyses mammograms (MG) and "
        "breast ultrasound (US) only. Upload an MG or US image."
    )


def test_type_comes_from_content_not_name(corpus: dict[str, Case]) -> None:
    as_dcm = judge(corpus["mdb001.dcm"].data, "mdb001.dcm")
    as_png = judge(corpus["mammogram.png"].data, "mammogram.png")
    assert as_dcm.scan is not None
    assert as_dcm.scan.metadata.format == "png"
    assert as_png.scan is not None
    assert as_png.scan.metadata.format == "dicom"


def test_hostile_file_name_stays_one_plain_line(corpus: dict[str, Case]) -> None:
    name = "evil\n<script>{0}%s\x1b[31m" + "x" * 500
    verdict = judge(corpus["random.dcm"].data, name)
    assert verdict.code == "not-dicom-or-image"
    assert verdict.message.isprintable()
    assert "{0}%s" in verdict.message  # kept literally: never used as a format string
    assert len(verdict.message) < 500
