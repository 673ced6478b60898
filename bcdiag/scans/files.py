"""Judging files on disk: folders expanded, unreadable files as rejections."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from bcdiag.errors import ScanRejected
from bcdiag.scans.guard import judge
from bcdiag.scans.rules import check_file_size, reject
from bcdiag.scans.types import Verdict


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Each path, with folders replaced by the files inside them (recursively, sorted)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if not p.is_dir())
        else:
            yield path


def judge_file(path: Path, modality: str | None = None) -> Verdict:
    """Read the file (refusing oversized ones before reading) and judge it."""
    name = str(path)
    try:
        check_file_size(name, path.stat().st_size)
        data = path.read_bytes()
    except ScanRejected as exc:
        return Verdict.rejection(name, exc)
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
        error = reject(
            "unreadable",
            name,
            f"the file cannot be read ({problem}). Check the path and its permissions.",
        )
        return Verdict.rejection(name, error)
    return judge(data, name, modality=modality)
