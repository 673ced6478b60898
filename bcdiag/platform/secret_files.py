"""Secrets bcdiag keeps in files of its state folder: created once, mode 0600."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def _create_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def secret_file(path: Path, nbytes: int = 32) -> str:
    """The secret stored at `path` (hex), created with mode 0600 on first use."""
    if not path.exists():
        _create_private(path, secrets.token_hex(nbytes))
    return path.read_text().strip()


def private_json(path: Path, content: dict[str, Any]) -> None:
    """Write `content` to `path` as JSON, readable by this account only."""
    path.unlink(missing_ok=True)
    _create_private(path, json.dumps(content))
