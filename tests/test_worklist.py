"""The worklist: a clinician's exams sorted, filtered and paged, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from exam_files import analyse, four_views, store_dicom

from bcdiag.storage import Storage
from bcdiag.storage.worklist import InvalidWorklistQuery

# patient key: (patient name, study date, score, outcome recorded)
EXAMS = {
    "P-ANNA": ("SMITH^ANNA", date(2026, 1, 10), 0.9, True),
    "P-BEA": ("JONES^BEA", date(2026, 2, 5), 0.2, False),
    "P-CARL": ("SMITH^CARLA", date(2025, 12, 1), None, False),
    "P-DORA": ("BROWN^DORA", date(2026, 3, 1), 0.55, False),
    "P-EVA": ("white^eva", date(2026, 1, 20), None, False),
}


@pytest.fixture
def filled(storage: Storage, data_dir: Path) -> Storage:
    """`EXAMS` stored for alice in this order (one view each), and one exam for bob."""
    for key, (name, day, score, outcome) in EXAMS.items():
        data = four_views(data_dir, patient_id=key, patient_name=name, study_date=day)["RCC"]
        scan = store_dicom(storage, data, f"{key}.dcm")
        if score is not None:
            analysis = analyse(storage, scan.id, score)
            if outcome:
                storage.record_feedback(analysis.id, "alice", "biopsy-malignant")
    bob = four_views(data_dir, patient_id="P-ZOE", study_date=date(2026, 1, 1))["LCC"]
    store_dicom(storage, bob, "zoe.dcm", user="bob")
    return storage


def keys(storage: Storage, **query: object) -> list[str]:
    return [row.patient_key for row in storage.worklist("alice", **query).rows]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sort", "descending", "expected"),
    [
        ("date", True, ["P-DORA", "P-BEA", "P-EVA", "P-ANNA", "P-CARL"]),
        ("date", False, ["P-CARL", "P-ANNA", "P-EVA", "P-BEA", "P-DORA"]),
        ("patient", False, ["P-ANNA", "P-BEA", "P-CARL", "P-DORA", "P-EVA"]),
        ("patient", True, ["P-EVA", "P-DORA", "P-CARL", "P-BEA", "P-ANNA"]),
        ("score", True, ["P-ANNA", "P-DORA", "P-BEA", "P-EVA", "P-CARL"]),  # unscored last
        ("score", False, ["P-BEA", "P-DORA", "P-ANNA", "P-CARL", "P-EVA"]),  # in either order
        ("state", False, ["P-CARL", "P-EVA", "P-BEA", "P-DORA", "P-ANNA"]),
        ("state", True, ["P-ANNA", "P-DORA", "P-BEA", "P-EVA", "P-CARL"]),
        ("activity", True, ["P-EVA", "P-DORA", "P-CARL", "P-BEA", "P-ANNA"]),
    ],
)
def test_every_order_in_both_directions(
    filled: Storage, sort: str, descending: bool, expected: list[str]
) -> None:
    assert keys(filled, sort=sort, descending=descending) == expected


def test_the_default_is_the_newest_exam_first_with_its_summary(filled: Storage) -> None:
    page = filled.worklist("alice")
    assert page.total == 5
    first = page.rows[0]
    assert (first.patient_key, first.patient_name, first.exam_date) == (
        "P-DORA",
        "BROWN^DORA",
        date(2026, 3, 1),
    )
    assert (first.state, first.score, first.image_count, first.modality) == (
        "analysed",
        0.55,
        1,
        "MG",
    )
    assert [(r.patient_key, r.state) for r in filled.worklist("alice", sort="patient").rows][
        -1
    ] == ("P-ANNA", "outcome recorded")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"patient": "smith"}, ["P-ANNA", "P-CARL"]),  # by name, any case
        ({"patient": "WHITE^E"}, ["P-EVA"]),
        ({"patient": "p-d"}, ["P-DORA"]),  # by key
        ({"patient": "%"}, []),  # a wildcard is a plain character
        ({"state": "not analysed"}, ["P-CARL", "P-EVA"]),
        ({"state": "analysed"}, ["P-BEA", "P-DORA"]),
        ({"state": "outcome recorded"}, ["P-ANNA"]),
        (
            {"date_from": date(2026, 1, 10), "date_to": date(2026, 2, 5)},
            ["P-ANNA", "P-BEA", "P-EVA"],
        ),
        ({"date_from": date(2026, 2, 6)}, ["P-DORA"]),
        ({"min_score": 0.55}, ["P-ANNA", "P-DORA"]),
        ({"patient": "smith", "state": "not analysed"}, ["P-CARL"]),
    ],
)
def test_filters_and_their_totals(
    filled: Storage, query: dict[str, object], expected: list[str]
) -> None:
    page = filled.worklist("alice", sort="patient", descending=False, **query)  # type: ignore[arg-type]
    assert [row.patient_key for row in page.rows] == expected
    assert page.total == len(expected)


def test_pages_know_the_total(filled: Storage) -> None:
    pages = [filled.worklist("alice", sort="patient", descending=False, offset=o, limit=2)
             for o in (0, 2, 4, 6)]  # fmt: skip
    assert [[row.patient_key for row in page.rows] for page in pages] == [
        ["P-ANNA", "P-BEA"],
        ["P-CARL", "P-DORA"],
        ["P-EVA"],
        [],
    ]
    assert {page.total for page in pages} == {5}
    smiths = filled.worklist("alice", patient="smith", limit=1)
    assert (len(smiths.rows), smiths.total) == (1, 2)


def test_each_clinician_has_their_own_worklist(filled: Storage) -> None:
    assert [row.patient_key for row in filled.worklist("bob").rows] == ["P-ZOE"]
    assert filled.worklist("carol").total == 0
    assert len(filled.list_cases("alice")) == 5


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"sort": "name"}, "'name' is not a worklist order; choose one of: date, patient, state, "
                           "score, activity"),
        ({"state": "done"}, "'done' is not an exam state; choose one of: not analysed, analysed, "
                            "outcome recorded"),
        ({"limit": 0}, "a worklist page has 1 to 500 rows from offset 0 or more; got limit 0"),
        ({"limit": 501}, "got limit 501"),
        ({"offset": -1}, "offset -1"),
    ],
)  # fmt: skip
def test_a_wrong_query_says_what_is_accepted(
    storage: Storage, query: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidWorklistQuery) as raised:
        storage.worklist("alice", **query)  # type: ignore[arg-type]
    assert message in str(raised.value)
