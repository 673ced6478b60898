"""`judge`: run `read_upload` in a guarded child process and turn every outcome into a Verdict.

One warm worker (a pebble ProcessPool of size 1, forkserver context) serves all calls,
so judging many files costs one interpreter start, not one per file. Each file gets at
most ``validate_timeout_s`` seconds; the worker's address space is capped at
``validate_memory_bytes`` (RLIMIT_AS). pebble kills a worker that runs over time and
starts a fresh one; a worker that dies (a decoder crash, the kernel's OOM killer) is
replaced the same way. Hostile files therefore cost a rejection, never the caller.

The worker reads the caller's BCDIAG_* variables afresh for each file, so limits changed
after it started still apply. As with any forkserver/spawn pool, a script that calls
`judge` needs the ``if __name__ == "__main__":`` guard (notebooks, the CLI and pytest
need nothing).
"""

from __future__ import annotations

import atexit
import io
import logging
import multiprocessing
import os
import resource
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from pebble import ProcessExpired, ProcessFuture, ProcessPool
from PIL import Image

from bcdiag.errors import ScanRejected
from bcdiag.scans.reader import read_upload
from bcdiag.scans.rules import reject, shown
from bcdiag.scans.types import Scan, Verdict
from bcdiag.settings import get_settings

logger = logging.getLogger(__name__)

_PREFIX = "BCDIAG_"
_lock = threading.RLock()
_pool: ProcessPool | None = None
_pool_memory: int | None = None


def judge(data: bytes, name: str, *, modality: str | None = None) -> Verdict:
    """Read and validate one file in the guarded worker; never raises for bad input.

    Args:
        data: the file's bytes.
        name: the file's name, used only in messages and in ``Verdict.file``.
        modality: the caller's hint, as for `read_scan`; the image must look like the
            modality it ends with (``modality-mismatch`` otherwise).

    Returns:
        An accepted Verdict with the Scan, or a rejected one with a code and a message.
    """
    settings = get_settings()
    timeout = settings.validate_timeout_s
    try:
        scan = _run(data, name, modality)
    except ScanRejected as exc:
        return Verdict.rejection(name, exc)
    except FutureTimeout:
        return Verdict.rejection(
            name,
            reject(
                "timeout",
                name,
                f"reading the file took longer than {timeout:g} s, so it was stopped; it is "
                "damaged or far too large. Upload a single 2-D image of normal size.",
            ),
        )
    except MemoryError:
        _discard_pool()  # a worker that ran out of memory is not trusted with the next file
        return Verdict.rejection(
            name,
            reject(
                "too-large",
                name,
                f"decoding the image needs more than the {settings.validate_memory_bytes:,} "
                "bytes of memory allowed. Upload a smaller image.",
            ),
        )
    except (ProcessExpired, BrokenProcessPool) as exc:
        logger.warning("scan reader died on one file (%s)", type(exc).__name__)
        _discard_pool()
        return Verdict.rejection(
            name,
            reject(
                "crashed",
                name,
                "the image decoder stopped abnormally on this file; it is damaged or "
                "hostile. Export the image again from the PACS or the scanner.",
            ),
        )
    except Exception as exc:  # noqa: BLE001 - untrusted input may break a library in any way
        # Only the type is logged: a library's message may quote header values.
        logger.error("scan reader failed on one file with %s", type(exc).__name__)
        return Verdict.rejection(
            name,
            reject(
                "corrupt-file",
                name,
                f"the file could not be read ({type(exc).__name__}); it is damaged. "
                "Export the image again from the PACS or the scanner.",
            ),
        )
    return _accepted(name, scan)


def start_reader() -> None:
    """Start the worker now with a tiny image, ahead of the first file: its start (an
    interpreter importing the readers, seconds on 2 busy cores) would otherwise count
    against that file's ``validate_timeout_s`` and its caller's wait."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 128, dtype=np.uint8)).save(buffer, format="PNG")
    judge(buffer.getvalue(), "warm-up.png", modality="US")


def _run(data: bytes, name: str, modality: str | None) -> Scan:
    """`read_upload` in the worker, retried once on a fresh pool if the pool itself broke."""
    try:
        return _submit(data, name, modality).result()
    except BrokenProcessPool:
        # The worker died between tasks, so this file never ran: start afresh, once.
        _discard_pool()
        return _submit(data, name, modality).result()


def _submit(data: bytes, name: str, modality: str | None) -> ProcessFuture[Scan]:
    settings = get_settings()
    environment = {k: v for k, v in os.environ.items() if k.startswith(_PREFIX)}
    return _worker(settings.validate_memory_bytes).schedule(
        _read_with_environment,
        args=(environment, data, name, modality),
        timeout=settings.validate_timeout_s,
    )


def _read_with_environment(
    environment: dict[str, str], data: bytes, name: str, modality: str | None
) -> Scan:
    """In the worker: adopt the caller's current BCDIAG_* settings, then `read_upload`.

    The worker inherited the environment of the moment it was started; the limits that
    apply are the caller's at the time of the call.
    """
    current = {k: v for k, v in os.environ.items() if k.startswith(_PREFIX)}
    if current != environment:
        for key in current.keys() - environment.keys():
            del os.environ[key]
        os.environ.update(environment)
        get_settings.cache_clear()
    return read_upload(data, name, modality=modality)


def _accepted(name: str, scan: Scan) -> Verdict:
    meta = scan.metadata
    what = meta.modality or "modality not stated"
    return Verdict(
        file=name,
        ok=True,
        code=None,
        message=f"{shown(name)}: accepted ({meta.format.upper()}, {what}, "
        f"{meta.rows} x {meta.columns} pixels).",
        modality=meta.modality,
        rows=meta.rows,
        columns=meta.columns,
        scan=scan,
    )


def _prepare_worker(limit: int) -> None:
    """Worker initializer: cap the address space; silence decoders' own stderr chatter.

    C decoders print notes such as "Corrupt JPEG data" straight to file descriptor 2;
    each such file already ends as a verdict, and the CLI promises one line per file.
    """
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _worker(memory: int) -> ProcessPool:
    """The warm pool, (re)started when absent or when the memory limit changed."""
    global _pool, _pool_memory
    with _lock:
        if _pool is None or _pool_memory != memory or not _pool.active:
            _discard_pool()
            _pool = ProcessPool(
                max_workers=1,
                initializer=_prepare_worker,
                initargs=(memory,),
                context=multiprocessing.get_context("forkserver"),
            )
            _pool_memory = memory
        return _pool


def _discard_pool() -> None:
    """Stop the pool (if any); the next call starts a fresh one."""
    global _pool
    with _lock:
        if _pool is not None:
            _pool.stop()  # type: ignore[no-untyped-call]
            _pool.join()  # type: ignore[no-untyped-call]
            _pool = None


atexit.register(_discard_pool)
