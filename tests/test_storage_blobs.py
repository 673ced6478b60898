"""Blob stores: content-addressed, idempotent, never half-written, damage detected."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from bcdiag.errors import ConfigurationError, StorageError
from bcdiag.storage.blob_schemes import open_blob_store
from bcdiag.storage.blobs import BlobStore, FileBlobStore, blob_key

DATA = b"\x00mammogram bytes\xff" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(params=["file", pytest.param("gs", marks=pytest.mark.gcs)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh blob store URL for each kind of store."""
    if request.param == "file":
        return (tmp_path / "blobs").as_uri()
    return str(request.getfixturevalue("gcs_url"))


@pytest.fixture
def store(store_url: str) -> BlobStore:
    return open_blob_store(store_url)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_then_get_returns_the_bytes_under_a_sha256_key(store: BlobStore) -> None:
    assert not store.exists(SHA)
    key = store.put(SHA, DATA)
    assert key == f"sha256/{SHA[:2]}/{SHA}"
    assert store.exists(SHA)
    assert store.get(SHA) == DATA


def test_put_is_idempotent(store: BlobStore) -> None:
    assert store.put(SHA, DATA) == store.put(SHA, DATA)
    assert store.get(SHA) == DATA


def test_put_refuses_bytes_that_do_not_match_the_hash(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="does not hash"):
        store.put(SHA, DATA + b"!")
    assert not store.exists(SHA)


def test_missing_blob_is_a_storage_error(store: BlobStore) -> None:
    with pytest.raises(StorageError, match="missing"):
        store.get("0" * 64)


def test_file_blob_is_damage_checked_on_read(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    store.put(SHA, DATA)
    (tmp_path / blob_key(SHA)).write_bytes(DATA[:-1] + b"?")
    with pytest.raises(StorageError, match="damaged"):
        store.get(SHA)


@pytest.mark.gcs
def test_gcs_blob_lives_under_the_prefix_and_is_damage_checked(gcs_url: str) -> None:
    store = open_blob_store(gcs_url)
    store.put(SHA, DATA)
    bucket_name = gcs_url.removeprefix("gs://").split("/")[0]
    client = gcs.Client(project="bcdiag-test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    bucket = client.bucket(bucket_name)
    assert [b.name for b in client.list_blobs(bucket_name)] == [f"blobs/{blob_key(SHA)}"]
    bucket.blob(f"blobs/{blob_key(SHA)}").upload_from_string(b"tampered")
    with pytest.raises(StorageError, match="damaged"):
        store.get(SHA)


class DiskFullMidway(FileBlobStore):
    """A file store whose disk fills up after half of the bytes are written."""

    def _write_all(self, fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")


def test_write_failing_midway_leaves_no_blob_and_no_temp_file(tmp_path: Path) -> None:
    store = DiskFullMidway(tmp_path)
    with pytest.raises(StorageError, match="No space left"):
        store.put(SHA, DATA)
    assert not store.exists(SHA)
    assert _files(tmp_path) == []


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    data = os.urandom(8 << 20)
    sha = hashlib.sha256(data).hexdigest()
    store = FileBlobStore(tmp_path)
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        path = tmp_path / blob_key(sha)
        while not (done.is_set() and seen):  # until it has read the finished blob
            if path.exists():
                seen.append(len(path.read_bytes()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        store.put(sha, data)
    finally:
        done.set()
        watcher.join(timeout=30)
    assert set(seen) == {len(data)}


def test_concurrent_puts_of_the_same_bytes_store_one_blob(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    threads = [threading.Thread(target=store.put, args=(SHA, DATA)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _files(tmp_path) == [tmp_path / blob_key(SHA)]
    assert store.get(SHA) == DATA


def test_unknown_scheme_lists_the_schemes_that_exist() -> None:
    with pytest.raises(ConfigurationError, match=r"s3.*file://, gs://"):
        open_blob_store("s3://bucket/prefix")


@pytest.mark.parametrize("url", ["file://relative/path", "file://otherhost/srv", "gs:///prefix"])
def test_malformed_store_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_blob_store(url)


def test_keys_are_only_made_from_sha256() -> None:
    with pytest.raises(ValueError, match="sha256"):
        blob_key("../../etc/passwd")
