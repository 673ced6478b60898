"""The one error tree of bcdiag.

Every error a user can cause derives from `BcdiagError`; a scan that cannot be
analysed raises `ScanRejected` with a stable machine-readable `code` and a
sentence that names the file, the problem and what the user can do.
"""

from __future__ import annotations


class BcdiagError(Exception):
    """Base class of every error bcdiag raises on purpose."""


class ScanRejected(BcdiagError):
    """A file is not a usable breast scan.

    Args:
        code: stable identifier of the rule that failed (e.g. ``"too-large"``).
        message: one sentence for people: the file, the problem, what to do.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[ScanRejected], tuple[str, str]]:
        # Keeps code and message when the error crosses a process boundary.
        return (ScanRejected, (self.code, self.message))


class StorageError(BcdiagError):
    """The database or the blob store failed; nothing partial was kept."""


class ConfigurationError(BcdiagError):
    """A setting has a value bcdiag cannot use."""
