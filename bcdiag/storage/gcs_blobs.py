"""Blobs in a Google Cloud Storage bucket (or `gcp-storage-emulator` in tests).

GCS makes an object visible only when its upload completes, and
``if_generation_match=0`` makes the upload create-only, so a blob is never
half-written nor overwritten. With ``STORAGE_EMULATOR_HOST`` set, the client
talks to that emulator anonymously.
"""

from __future__ import annotations

import os

from google.api_core.exceptions import GoogleAPIError, NotFound, PreconditionFailed
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import GoogleAuthError
from google.cloud import storage
from requests import RequestException

from bcdiag.errors import StorageError
from bcdiag.storage.blobs import BlobStore

EMULATOR_PROJECT = "bcdiag-local"
# What the client raises when GCS or the network fails (requests is its transport).
_GCS_ERRORS = (GoogleAPIError, GoogleAuthError, RequestException)


def _client() -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        project = os.environ.get("GOOGLE_CLOUD_PROJECT", EMULATOR_PROJECT)
        return storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client()


class GcsBlobStore(BlobStore):
    """Blobs as objects ``<prefix>/sha256/ab/...`` in one bucket."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.url = f"gs://{bucket}/{prefix}".rstrip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        try:
            self._bucket = _client().bucket(bucket)
        except _GCS_ERRORS as exc:
            raise StorageError(f"cannot open {self.url}: {exc}") from exc

    def _blob(self, key: str) -> storage.Blob:
        return self._bucket.blob(self._prefix + key)

    def _exists(self, key: str) -> bool:
        try:
            return bool(self._blob(key).exists())
        except _GCS_ERRORS as exc:
            raise StorageError(f"cannot look up blob {key} in {self.url}: {exc}") from exc

    def _read(self, key: str) -> bytes:
        try:
            return bytes(self._blob(key).download_as_bytes())
        except NotFound as exc:
            raise StorageError(f"blob {key} is missing from {self.url}") from exc
        except _GCS_ERRORS as exc:
            raise StorageError(f"cannot read blob {key} from {self.url}: {exc}") from exc

    def _write(self, key: str, data: bytes) -> None:
        try:
            self._blob(key).upload_from_string(
                data, content_type="application/octet-stream", if_generation_match=0
            )
        except PreconditionFailed:
            return  # another writer stored the same bytes first
        except _GCS_ERRORS as exc:
            raise StorageError(f"cannot write blob {key} to {self.url}: {exc}") from exc
