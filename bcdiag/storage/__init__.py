"""Where bcdiag keeps things: a relational database and a content-addressed blob store.

Use `Storage.from_settings()`; it bundles both and offers `store_scan`.
"""

from bcdiag.storage.blob_schemes import open_blob_store
from bcdiag.storage.blobs import BlobStore
from bcdiag.storage.database import upgrade
from bcdiag.storage.facade import Storage
from bcdiag.storage.scan_store import StoredScan, record_audit, store_scan

__all__ = [
    "BlobStore",
    "Storage",
    "StoredScan",
    "open_blob_store",
    "record_audit",
    "store_scan",
    "upgrade",
]
