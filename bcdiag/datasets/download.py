"""Downloading public data sets with checksum verification."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from bcdiag.errors import BcdiagError

CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``"sha256"``, ``"md5"``, any `hashlib` name)."""
    with path.open("rb") as stream:
        return hashlib.file_digest(
            stream, lambda: hashlib.new(algorithm, usedforsecurity=False)
        ).hexdigest()


def download(
    url: str,
    target: Path,
    digest: str,
    algorithm: str = "sha256",
    *,
    convert: Callable[[bytes], bytes] | None = None,
    progress: bool = True,
    timeout_s: float = 60.0,
) -> Path:
    """Fetch `url` to `target`, verify its `algorithm` digest, and move it into place atomically.

    An existing `target` with the right digest is kept; a wrong digest leaves no file, and a
    partial download never lies under the name `target`.

    Args:
        convert: makes the file from the downloaded bytes (e.g. a derived image); the digest
            is then that of the converted file.
        progress: show a progress bar over the bytes of this one file.

    Raises:
        BcdiagError: the download failed, or its digest is not `digest`.
    """
    if target.exists() and file_digest(target, algorithm) == digest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name per attempt, created like any file (umask applies: the set may be shared)
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with partial.open("xb") as part:
            _copy(url, part, target, progress, timeout_s)
        if convert is not None:
            partial.write_bytes(_converted(convert, partial.read_bytes(), url, target))
        actual = file_digest(partial, algorithm)
        if actual != digest:
            raise BcdiagError(
                f"{target.name}: {url} gave {algorithm.upper()} {actual}, expected {digest}; "
                "nothing was kept. Try again, or download it by hand and check it."
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _copy(url: str, part: BinaryIO, target: Path, progress: bool, timeout_s: float) -> None:
    """Stream `url` into `part`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress
            ) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    part.write(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as error:
        raise BcdiagError(f"could not download {url} for {target}: {error}") from error
    # read(amt) ends quietly when the connection drops early
    if total is not None and part.tell() != total:
        raise BcdiagError(
            f"could not download {url} for {target}: the connection closed after "
            f"{part.tell()} of {total} bytes"
        )


def _converted(convert: Callable[[bytes], bytes], data: bytes, url: str, target: Path) -> bytes:
    """`convert(data)`, its failure on a damaged upstream file reported as such."""
    try:
        return convert(data)
    except (OSError, ValueError) as error:  # what Pillow and numpy raise on bad input
        raise BcdiagError(f"{target.name}: {url} could not be converted: {error}") from error
