"""Content-addressed blob stores: the interface and the local folder store
(`bcdiag.storage.blob_schemes` opens one by URL scheme).

A blob is named by the sha256 of its bytes (``sha256/ab/abcdef...``), so storing
it twice is harmless and a stored blob never changes. Every store makes a blob
visible only once all of its bytes are durable, and checks the hash on reading.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from bcdiag.errors import StorageError

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


def blob_key(sha256: str) -> str:
    """The key of the blob whose bytes hash to ``sha256``."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a lowercase hex sha256")
    return f"sha256/{sha256[:2]}/{sha256}"


class BlobStore(ABC):
    """Where blobs live. Subclasses implement the four primitives on keys."""

    url: str

    def put(self, sha256: str, data: bytes) -> str:
        """Store ``data`` under its hash, once; returns the key. Raises `StorageError`."""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"data does not hash to {sha256}")
        key = blob_key(sha256)
        if not self._exists(key):
            self._write(key, data)
        return key

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; `StorageError` if missing or damaged."""
        key = blob_key(sha256)
        data = self._read(key)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StorageError(f"blob {key} in {self.url} is damaged: its hash does not match")
        return data

    def exists(self, sha256: str) -> bool:
        """Whether a complete blob is stored under ``sha256``."""
        return self._exists(blob_key(sha256))

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _read(self, key: str) -> bytes: ...

    @abstractmethod
    def _write(self, key: str, data: bytes) -> None:
        """Make ``data`` visible under ``key`` all at once, or not at all."""


class FileBlobStore(BlobStore):
    """Blobs as files under a folder; written to a temp file, fsynced, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"blob {key} is missing from {self.url}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read blob {key} from {self.url}: {exc}") from exc

    def _write(self, key: str, data: bytes) -> None:
        final = self._path(key)
        temp: str | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
            try:
                self._write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
            temp = None
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StorageError(f"cannot write blob {key} to {self.url}: {exc}") from exc
        finally:
            if temp is not None:
                Path(temp).unlink(missing_ok=True)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view[:_CHUNK])
            view = view[written:]


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable, not only the file's bytes.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
