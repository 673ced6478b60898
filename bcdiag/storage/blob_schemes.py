"""Blob stores chosen by URL scheme (``file://``, ``gs://``), with an error that lists
the schemes that exist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bcdiag.errors import ConfigurationError
from bcdiag.storage.blobs import BlobStore, FileBlobStore


def _open_file_store(url: str) -> BlobStore:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigurationError(
            f"blob store URL {url!r} must name an absolute local folder, e.g. file:///srv/blobs"
        )
    return FileBlobStore(Path(unquote(parts.path)))


def _open_gcs_store(url: str) -> BlobStore:
    from bcdiag.storage.gcs_blobs import GcsBlobStore  # imports google-cloud-storage

    parts = urlsplit(url)
    if not parts.netloc:
        raise ConfigurationError(f"blob store URL {url!r} must name a bucket: gs://bucket/prefix")
    return GcsBlobStore(parts.netloc, parts.path.strip("/"))


BLOB_STORE_SCHEMES: dict[str, Callable[[str], BlobStore]] = {
    "file": _open_file_store,
    "gs": _open_gcs_store,
}
"""URL scheme -> function that opens a blob store for such a URL."""


def open_blob_store(url: str) -> BlobStore:
    """The blob store for ``url``; `ConfigurationError` names the schemes that exist."""
    scheme = urlsplit(url).scheme
    opener = BLOB_STORE_SCHEMES.get(scheme)
    if opener is None:
        known = ", ".join(f"{name}://" for name in BLOB_STORE_SCHEMES)
        raise ConfigurationError(
            f"blob store URL {url!r} has unknown scheme {scheme!r}; use one of: {known}"
        )
    return opener(url)
