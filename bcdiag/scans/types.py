"""The values the scan reader hands out: `Scan`, its `ScanMetadata`, and a `Verdict`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bcdiag.errors import ScanRejected


@dataclass(frozen=True)
class ScanMetadata:
    """The few header fields bcdiag keeps; never patient-identifying ones.

    ``modality`` is the DICOM Modality, or for PNG/JPEG the caller's hint (or None).
    ``laterality`` is ImageLaterality, else Laterality; ``view`` is ViewPosition;
    ``pixel_spacing_mm`` is ImagerPixelSpacing, else PixelSpacing (row, column).
    """

    format: str
    modality: str | None
    laterality: str | None
    view: str | None
    photometric_interpretation: str
    bits_stored: int
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float] | None
    presentation_intent: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    manufacturer: str | None

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-safe values (the spacing tuple becomes a list)."""
        values = asdict(self)
        spacing = self.pixel_spacing_mm
        values["pixel_spacing_mm"] = list(spacing) if spacing is not None else None
        return values


@dataclass(frozen=True)
class Scan:
    """A decoded scan: float32 (rows, columns) in [0, 1], bright = dense tissue / echo."""

    image: np.ndarray
    metadata: ScanMetadata


@dataclass(frozen=True)
class Verdict:
    """The outcome of judging one file; ``scan`` is set exactly when ``ok``."""

    file: str
    ok: bool
    code: str | None
    message: str
    modality: str | None
    rows: int | None
    columns: int | None
    scan: Scan | None

    @classmethod
    def rejection(cls, file: str, error: ScanRejected) -> Verdict:
        """The verdict for a file that broke a rule."""
        return cls(
            file=file,
            ok=False,
            code=error.code,
            message=error.message,
            modality=None,
            rows=None,
            columns=None,
            scan=None,
        )

    def as_json(self) -> dict[str, Any]:
        """The verdict without the pixels, as one JSON object."""
        return {
            "file": self.file,
            "ok": self.ok,
            "code": self.code,
            "message": self.message,
            "modality": self.modality,
            "rows": self.rows,
            "columns": self.columns,
        }
