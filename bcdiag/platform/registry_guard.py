"""Which MLflow registry requests the hub-OAuth proxy refuses: the registry is read-only
through the researchers' MLflow UI (/services/mlflow/).

The ``champion`` alias decides which model scores clinicians' scans, so only ``bcdiag
promote``, ``rollback`` and the retraining cycle may move it (they gate and audit each
move). Through the UI a researcher may still read the registry, and create a registered
model or version or edit a description (what the UI's "Register model" does: nothing
that bcdiag serves changes); every other registry write is refused: alias set/delete,
version/model delete, rename, tag set/delete (``bundle_sha256`` is what a loaded
bundle is checked against), stage transitions, and any registry write MLflow adds later.
MLflow's GraphQL endpoint has no registry writes. Runs and experiments stay writable.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

# MLflow's REST paths: /api/<n>.0/mlflow/... (clients) and /ajax-api/<n>.0/mlflow/... (UI).
_REGISTRY = re.compile(r"^/(?:ajax-)?api/\d+\.\d+/mlflow/(registered-models|model-versions)/(.+)$")
_ALLOWED_WRITES = {
    ("registered-models", "create"),
    ("registered-models", "update"),
    ("registered-models", "get-latest-versions"),  # a read that MLflow also takes as POST
    ("model-versions", "create"),
    ("model-versions", "update"),
}
_READS = {"GET", "HEAD", "OPTIONS"}
REFUSAL = (
    "The model registry is read-only here: aliases such as 'champion' move only through "
    "the quality gate (bcdiag promote, bcdiag rollback, the retraining cycle), and models, "
    "versions and their tags are not removed or changed from the MLflow UI. Ask an administrator."
)


def refuses(method: str, path: str) -> bool:
    """Whether a request of `method` on the proxied `path` writes to the registry in a way
    the UI may not.

    `path` is matched in its plainest form, whatever MLflow would make of it:
    percent-escapes decoded, repeated slashes merged, dot segments resolved.
    """
    if method.upper() in _READS:
        return False
    normal = posixpath.normpath(re.sub(r"/{2,}", "/", "/" + unquote(path)))
    found = _REGISTRY.match(normal)
    return found is not None and (found[1], found[2]) not in _ALLOWED_WRITES
