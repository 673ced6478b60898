"""The hanging rules: slots, the exam score, and chest walls facing each other."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from exam_files import four_views

from bcdiag.app.hanging import HANGING, chest_wall_on_left, exam_score, facing, hung, slot
from bcdiag.scans.display import DisplayImage, display_pixels
from bcdiag.storage.analysis_store import StoredAnalysis
from bcdiag.storage.scan_store import StoredScan
from bcdiag.storage.worklist import ExamImageEntry

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _image(laterality: str | None, view: str | None, probability: float | None) -> ExamImageEntry:
    scan = StoredScan(
        id=1, sha256="a" * 64, blob_key="k", filename="f.dcm", format="dicom", modality="MG",
        rows=10, columns=10, metadata={}, uploaded_by="alice", created_at=NOW,
    )  # fmt: skip
    analysis = None
    if probability is not None:
        analysis = StoredAnalysis(
            id=1, scan_id=1, scan_sha256="a" * 64, user="alice", created_at=NOW,
            model_name="bcdiag-mg", model_version="1", model_sha256="b" * 64,
            probability=probability, threshold=0.5, call="not suspicious",
            heatmap_blob_key=None, details={},
        )  # fmt: skip
    return ExamImageEntry(scan, "f.dcm", NOW, None, laterality, view, analysis, None)


def test_slots_and_the_rest_keep_their_order() -> None:
    images = [_image("L", "MLO", None), _image("R", "CC", None), _image("R", "ML", None),
              _image("R", "CC", None), _image(None, None, None)]  # fmt: skip
    slots, rest = hung(images)
    assert list(slots) == ["LMLO", "RCC"] and slots["RCC"] is images[1]
    assert rest == [images[2], images[3], images[4]]  # another view, a second RCC, no view
    assert [slot(image) for image in images] == ["LMLO", "RCC", None, "RCC", None]
    assert set(HANGING) == {"RCC", "LCC", "RMLO", "LMLO"}


def test_the_exam_score_is_the_highest_image_score() -> None:
    assert exam_score([_image("R", "CC", None)]) is None
    assert exam_score([_image("R", "CC", 0.2), _image("L", "CC", 0.7), _image("L", "MLO", None)])\
        == pytest.approx(0.7)  # fmt: skip


def _breast(on_left: bool) -> DisplayImage:
    values = np.zeros((60, 80), dtype=np.float32)
    values[:, :30] = 1000.0  # tissue against the left edge, background elsewhere
    return DisplayImage(values if on_left else values[:, ::-1].copy(), 500.0, 1000.0, False)


def test_chest_walls_face_each_other() -> None:
    left_wall = _breast(on_left=True)
    assert chest_wall_on_left(left_wall)
    assert not chest_wall_on_left(replace(left_wall, invert=True))  # MONOCHROME1: reversed
    heat = np.zeros((6, 8), dtype=np.float32)
    heat[:, 0] = 1.0
    same, same_heat = facing(left_wall, heat, "L")  # a left breast: its wall on the left
    assert same is left_wall and same_heat is heat
    mirrored, mirrored_heat = facing(left_wall, heat, "R")  # a right breast: on the right
    assert not chest_wall_on_left(mirrored)
    assert mirrored_heat is not None and mirrored_heat[:, -1].all()  # the heat moves along
    assert facing(left_wall, None, None)[0] is left_wall  # no laterality: left alone


def test_real_mammograms_find_their_chest_wall(data_dir: Path) -> None:
    for name, data in four_views(data_dir, patient_id="P-1").items():
        image = display_pixels(data, f"{name}.dcm")
        hung_image, _ = facing(image, None, name[0])
        assert chest_wall_on_left(hung_image) == (name[0] == "L"), name
