"""Scoring many scan files on Dask; one file is scored in this process.

Each Dask worker keeps one `Predictor`, so a model is loaded once per worker.
Workers read the files and write the heatmaps themselves: with an external
scheduler (``BCDIAG_DASK_SCHEDULER``) they must see the same paths. Results
come back in completion order (each carries its ``file``), as dicts of
`Prediction.as_json` plus ``ok: true`` (and ``heatmap``: the PNG's path), or
``ok: false`` with ``code`` and ``message`` for a rejected file or one no model reads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dask
import mlflow
from distributed import Client, LocalCluster, as_completed
from tqdm import tqdm

from bcdiag.errors import ScanRejected
from bcdiag.scans.files import iter_files, judge_file
from bcdiag.scans.rules import reject, shown
from bcdiag.scans.types import Verdict
from bcdiag.serving.heatmaps import overlay_png
from bcdiag.serving.inference import Predictor
from bcdiag.serving.results import NoModelError, UnapprovedChampion
from bcdiag.settings import get_settings

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_LOCAL_WORKERS = 2


def score_files(
    paths: Iterable[Path], *, heatmap_dir: Path | None = None, modality: str | None = None
) -> Iterator[dict[str, Any]]:
    """Score every file (folders recursively, archives unpacked), in completion order.

    Args:
        paths: files, folders and .zip/.tar/.tar.gz archives.
        heatmap_dir: where to write ``<file stem>_heatmap.png`` overlays; None for none.
        modality: the modality of PNG/JPEG files (DICOM files carry their own).
    """
    uri = get_settings().resolved_tracking_uri
    with tempfile.TemporaryDirectory(prefix="bcdiag-predict-") as unpacked:
        items = list(_expand(paths, Path(unpacked)))
        files = [item for item in items if isinstance(item, Path)]
        yield from (_rejected(item) for item in items if isinstance(item, Verdict))
        if heatmap_dir is not None:
            heatmap_dir.mkdir(parents=True, exist_ok=True)
        if len(files) == 1:
            yield score_file(files[0], uri, heatmap_dir, modality)
        elif files:
            yield from _score_on_dask(files, uri, heatmap_dir, modality)


def score_file(
    path: Path, tracking_uri: str, heatmap_dir: Path | None, modality: str | None
) -> dict[str, Any]:
    """Judge and score one file with this process's Predictor, on `tracking_uri`."""
    verdict = judge_file(path, modality)
    if verdict.scan is None:
        return _rejected(verdict)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        prediction = _predictor().predict(
            verdict.scan, verdict.file, heatmap=heatmap_dir is not None
        )
    except (NoModelError, UnapprovedChampion) as error:
        code = "no-model" if isinstance(error, NoModelError) else "unapproved-champion"
        message = f"{shown(verdict.file)}: {error}"
        return {"file": verdict.file, "ok": False, "code": code, "message": message}
    except ScanRejected as error:
        return _rejected(Verdict.rejection(verdict.file, error))
    result = {**prediction.as_json(), "ok": True}
    if heatmap_dir is not None and prediction.display_heatmap is not None:
        target = heatmap_dir / f"{path.stem}_heatmap.png"
        target.write_bytes(overlay_png(prediction.display, prediction.display_heatmap))
        result["heatmap"] = str(target)
    return result


@functools.cache
def _predictor() -> Predictor:
    """This process's Predictor; it keeps models per tracking URI, name and version."""
    return Predictor()


def _score_on_dask(
    files: list[Path], uri: str, heatmap_dir: Path | None, modality: str | None
) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        client = _client(stack)
        futures = [
            client.submit(score_file, path, uri, heatmap_dir, modality, pure=False)
            for path in files
        ]
        with tqdm(total=len(futures), unit="file", disable=None) as progress:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                yield future.result()
                progress.update()


def _client(stack: contextlib.ExitStack) -> Client:
    """A client of ``dask_scheduler``, else of a new LocalCluster closed with `stack`."""
    address = get_settings().dask_scheduler
    client: Client
    if address:
        client = stack.enter_context(Client(address))  # type: ignore[no-untyped-call]
        return client
    workers = min(MAX_LOCAL_WORKERS, os.cpu_count() or 1)
    # Workers must be able to start the guarded child process that judges files.
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = stack.enter_context(
            LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        )
    client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
    return client


def _expand(paths: Iterable[Path], unpacked: Path) -> Iterator[Path | Verdict]:
    """Files to score, archives unpacked under `unpacked`; a bad archive as a rejection."""
    for index, path in enumerate(iter_files(paths)):
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            yield path
            continue
        folder = unpacked / f"{index}-{path.name}"
        try:
            _unpack(path, folder)
        except ScanRejected as error:
            yield Verdict.rejection(str(path), error)
            continue
        yield from iter_files([folder])


def _unpack(archive: Path, folder: Path) -> None:
    """Extract a zip or tar archive whose members add up to at most ``max_decoded_bytes``."""
    limit = get_settings().max_decoded_bytes
    name = str(archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as opened:
                _check_unpacked_size(name, sum(m.file_size for m in opened.infolist()), limit)
                opened.extractall(folder)  # zipfile drops absolute and ".." parts
            return
        with tarfile.open(archive) as opened:
            members = opened.getmembers()
            _check_unpacked_size(name, sum(m.size for m in members if m.isfile()), limit)
            opened.extractall(folder, filter="data")  # refuses links and paths outside
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as error:
        raise reject(
            "bad-archive", name, f"the archive cannot be unpacked ({error}). Upload it again."
        ) from error


def _check_unpacked_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise reject(
            "too-large",
            name,
            f"the archive unpacks to {size:,} bytes, over the limit of {limit:,} bytes. "
            "Split it into smaller archives.",
        )


def _rejected(verdict: Verdict) -> dict[str, Any]:
    return {"file": verdict.file, "ok": False, "code": verdict.code, "message": verdict.message}
