"""Worklist speed with many stored exams: first-page load per order and per filter.

Fills a fresh database through bulk inserts that respect the schema (every row a real
upload, exam image, analysis or feedback; each exam's summary columns computed as
`bcdiag.storage.exam_store` computes them, checked on a sample), then times
`Storage.worklist` (p50/p95 over repeated calls) for every order and a few filters, one
exam in full and the case list. The benchmarked clinician owns ``--exams`` exams (half
four-view mammography, half single ultrasound images, about three per patient, 80 %
analysed, a quarter of those with an outcome); a second clinician owns a tenth as many.

    .venv/bin/python benchmarks/worklist.py [--exams 10000] [--repeats 30]
    .ci/with-postgres sh -c '.venv/bin/python benchmarks/worklist.py \\
        --database-url "$BCDIAG_TEST_POSTGRES_URL"'

With ``--database-url`` the figures are taken in a new database on that server, dropped
afterwards; without it, in a SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, insert, make_url, select, text
from sqlalchemy.engine import Connection

from bcdiag.storage import Storage, upgrade
from bcdiag.storage.exam_store import refresh_exams
from bcdiag.storage.models import (
    Analysis,
    Case,
    Exam,
    ExamImage,
    Feedback,
    Scan,
    Upload,
)

T = TypeVar("T")
USER, OTHER = "dr-bench", "dr-other"
VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
START = datetime(2023, 1, 1, 8, tzinfo=UTC)


class Rows:
    """The rows of every table, ids assigned here (the database is new)."""

    def __init__(self) -> None:
        self.tables: dict[Any, list[dict[str, Any]]] = {
            t: [] for t in (Scan, Upload, Case, Exam, ExamImage, Analysis, Feedback)
        }

    def add(self, model: Any, **values: Any) -> int:
        rows = self.tables[model]
        rows.append({"id": len(rows) + 1, **values})
        return len(rows)


def fill(rows: Rows, user: str, exams: int, rng: random.Random) -> None:
    """``exams`` exams of ``user``, about three per patient, with their summaries."""
    patients = [
        rows.add(
            Case,
            owner=user,
            patient_key=f"{user}-P{n:06d}",
            patient_name=f"PATIENT^{n:06d}",
            source="dicom",
            created_at=START,
        )
        for n in range(max(1, exams // 3))
    ]
    for n in range(exams):
        case_id = rng.choice(patients)
        uploaded = START + timedelta(minutes=rng.randrange(3 * 365 * 24 * 60))
        mammography = n % 2 == 0
        views = VIEWS if mammography else ((None, None),)
        analysed, outcome = rng.random() < 0.8, rng.random() < 0.25
        study = f"2.25.{uuid.UUID(int=rng.getrandbits(128)).int}"
        exam_id = len(rows.tables[Exam]) + 1
        scores, last = [], uploaded
        for side, view in views:
            scan_id = rows.add(
                Scan,
                sha256=f"{rng.getrandbits(256):064x}",
                blob_key="sha256/bench",
                filename="view.dcm",
                format="dicom",
                modality="MG" if mammography else "US",
                rows=4096,
                columns=3328,
                metadata={"format": "dicom"},
                uploaded_by=user,
                created_at=uploaded,
            )
            upload_id = rows.add(
                Upload, scan_id=scan_id, user=user, filename="view.dcm", created_at=uploaded
            )
            rows.add(
                ExamImage,
                exam_id=exam_id,
                scan_id=scan_id,
                upload_id=upload_id,
                series_instance_uid=None,
                laterality=side,
                view=view,
            )
            if analysed:
                probability = rng.random()
                at = uploaded + timedelta(seconds=30)
                analysis_id = rows.add(
                    Analysis, scan_id=scan_id, user=user, created_at=at, model_name="bench",
                    model_version="1", model_sha256="0" * 64, probability=probability,
                    threshold=0.5, call="x", heatmap_blob_key=None, details={},
                )  # fmt: skip
                scores.append(probability)
                last = at
                if outcome:
                    last = at + timedelta(days=20)
                    rows.add(Feedback, analysis_id=analysis_id, user=user,
                             outcome="normal-follow-up", note="", created_at=last)  # fmt: skip
        case = rows.tables[Case][case_id - 1]
        rows.add(
            Exam,
            case_id=case_id,
            owner=user,
            patient_key=case["patient_key"],
            exam_key=study,
            study_instance_uid=study,
            accession_number=None,
            study_description=None,
            study_date=uploaded.date(),
            modality="MG" if mammography else "US",
            uploaded_at=uploaded,
            exam_date=uploaded.date(),
            image_count=len(views),
            state=(2 if outcome else 1) if analysed else 0,
            score=max(scores, default=None),
            last_activity_at=last,
        )


def insert_all(connection: Connection, rows: Rows) -> None:
    for model, values in rows.tables.items():
        table = model.__table__
        for start in range(0, len(values), 5000):
            connection.execute(insert(table), values[start : start + 5000])
        if connection.dialect.name == "postgresql":  # ids were given: move the sequences on
            connection.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), :n)"),
                {"n": max(len(values), 1)},
            )


def check_summaries(storage: Storage, sample: int, rng: random.Random) -> None:
    """The bulk summaries equal what `refresh_exams` computes, on a sample of exams."""
    with storage.sessions() as session:
        exams = session.scalars(select(Exam).where(Exam.owner == USER)).all()
        chosen = rng.sample(list(exams), min(sample, len(exams)))
        before = {e.id: (e.image_count, e.state, e.score, e.last_activity_at) for e in chosen}
        refresh_exams(session, USER, before, at=START)
        after = {e.id: (e.image_count, e.state, e.score, e.last_activity_at) for e in chosen}
        session.rollback()
    if before != after:
        raise SystemExit("bulk summaries differ from refresh_exams: the benchmark data is wrong")


def timed(call: Callable[[], T], repeats: int) -> tuple[str, T]:
    """p50/p95 of ``repeats`` calls after a warm-up, and the last result."""
    result = call()  # warm: the first call pays for connecting and compiling the statement
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - began)
    p95 = statistics.quantiles(seconds, n=20)[18] if repeats > 1 else seconds[0]
    return f"p50 {statistics.median(seconds) * 1e3:6.1f} ms, p95 {p95 * 1e3:6.1f} ms", result


@contextmanager
def fresh_database(server_url: str | None, folder: Path) -> Iterator[str]:
    """A new empty database: a SQLite file in ``folder``, or one on the server."""
    if server_url is None:
        yield f"sqlite:///{folder / 'bench.sqlite'}"
        return
    name = f"bcdiag_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exams", type=int, default=10_000, help="exams of the timed clinician")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per query")
    parser.add_argument("--database-url", help="a PostgreSQL server; default: a SQLite file")
    args = parser.parse_args()
    rng = random.Random(0)
    with (
        tempfile.TemporaryDirectory() as folder,
        fresh_database(args.database_url, Path(folder)) as url,
    ):
        upgrade(url)
        rows = Rows()
        fill(rows, USER, args.exams, rng)
        fill(rows, OTHER, args.exams // 10, rng)
        began = time.perf_counter()
        with Storage.open(url, Path(folder, "blobs").as_uri()) as storage:
            with storage.engine.begin() as connection:
                insert_all(connection, rows)
            if storage.engine.dialect.name == "postgresql":
                with storage.engine.connect() as connection:
                    connection.execute(text("ANALYZE"))
            filled_s = time.perf_counter() - began
            check_summaries(storage, 200, rng)
            counts = {m.__tablename__: len(v) for m, v in rows.tables.items()}
            print(
                f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}; database: {storage.engine.dialect.name} "
                f"{storage.engine.dialect.server_version_info}"
            )
            print(
                f"stored in {filled_s:.1f} s: "
                + ", ".join(f"{count:,} {table}" for table, count in counts.items())
                + f"; timed clinician: {args.exams:,} exams"
            )
            report(storage, args.repeats)


def report(storage: Storage, repeats: int) -> None:
    """One line per query: the first page (50 rows) and the total."""
    queries: list[tuple[str, dict[str, Any]]] = [
        ("date, newest first (default)", {}),
        ("date, oldest first", {"descending": False}),
        ("patient A-Z", {"sort": "patient", "descending": False}),
        ("state, in workflow order", {"sort": "state", "descending": False}),
        ("score, highest first", {"sort": "score"}),
        ("score, lowest first", {"sort": "score", "descending": False}),
        ("last activity, latest first", {"sort": "activity"}),
        ("filter state = analysed", {"state": "analysed"}),
        ("filter patient contains '00012'", {"patient": "00012"}),
        ("filter score >= 0.9, by score", {"min_score": 0.9, "sort": "score"}),
        ("filter 2024, by patient", {"date_from": date(2024, 1, 1),
                                     "date_to": date(2024, 12, 31), "sort": "patient"}),
        ("page 100 (offset 4950), by date", {"offset": 4950}),
    ]  # fmt: skip
    for label, query in queries:
        figures, page = timed(functools.partial(storage.worklist, USER, **query), repeats)
        print(f"worklist {label:34} {figures}  ({len(page.rows)} rows of {page.total:,})")
    exam_id = next(row.id for row in storage.worklist(USER).rows if row.modality == "MG")
    figures, _ = timed(lambda: storage.exam(USER, exam_id), repeats)
    print(f"{'one exam in full (4 views)':43} {figures}")
    figures, cases = timed(lambda: storage.list_cases(USER), max(3, repeats // 5))
    print(f"{'case list':43} {figures}  ({len(cases):,} cases)")


if __name__ == "__main__":
    main()
