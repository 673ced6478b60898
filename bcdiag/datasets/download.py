"""Downloading public data sets with checksum verification."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from bcdiag.errors import BcdiagError

CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    """MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, target: Path, md5: str, timeout_s: float = 60.0) -> Path:
    """Fetch `url` to `target`, verify its MD5, and move it into place atomically.

    An existing `target` with the right MD5 is kept; a wrong checksum leaves no file.

    Raises:
        BcdiagError: the download failed or its checksum is not `md5`.
    """
    if target.exists() and file_md5(target) == md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as part:
        partial = Path(part.name)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        part.write(chunk)
                        bar.update(len(chunk))
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise BcdiagError(f"could not download {url}: {error}") from error
    actual = file_md5(partial)
    if actual != md5:
        partial.unlink(missing_ok=True)
        raise BcdiagError(
            f"{url} arrived with MD5 {actual}, expected {md5}; the file was discarded. "
            "Try again, or download it by hand and check it."
        )
    shutil.move(partial, target)
    return target
