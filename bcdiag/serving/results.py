"""What scoring a scan gives back, and why it can fail: the half of serving that the
clinician app holds. Nothing here imports torch, so an app kernel stays light.

A `ScanResult` crosses the wire between the inference service and its clients as JSON
(`ScanResult.as_json` / `ScanResult.from_json`): the `Finding` as ``bcdiag predict
--json`` prints it, plus the two pictures as base64 PNG.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bcdiag.errors import BcdiagError, ScanRejected

NO_MODEL = "no-model"
UNAPPROVED_CHAMPION = "unapproved-champion"
REGISTRY_UNAVAILABLE = "registry-unavailable"


class NoModelError(BcdiagError):
    """No model can score this scan: unknown modality, or no champion registered yet."""


class RegistryUnavailable(BcdiagError):
    """The model registry did not answer in time or failed; no model could be chosen."""


class UnapprovedChampion(BcdiagError):
    """The champion alias names a version bcdiag did not make champion: no result."""

    def __init__(self) -> None:
        super().__init__(
            "the current model has not passed the quality gate; results are withheld; "
            "contact your administrator"
        )


class ServiceUnavailable(BcdiagError):
    """The inference service did not answer, or failed, within its time limit."""


ERROR_CODES: dict[type[BcdiagError], str] = {
    NoModelError: NO_MODEL,
    UnapprovedChampion: UNAPPROVED_CHAMPION,
    RegistryUnavailable: REGISTRY_UNAVAILABLE,
}


def error_json(error: BcdiagError) -> dict[str, str]:
    """A scoring failure as the service sends it: ``code`` and ``message``."""
    code = error.code if isinstance(error, ScanRejected) else ERROR_CODES.get(type(error))
    if code is None:
        raise TypeError(f"{type(error).__name__} is not a scoring failure")
    return {"code": code, "message": str(error)}


def error_from_json(body: dict[str, Any]) -> BcdiagError:
    """The error `error_json` describes, raised again on the client's side."""
    code, message = str(body["code"]), str(body["message"])
    if code == UNAPPROVED_CHAMPION:
        return UnapprovedChampion()
    kinds = {NO_MODEL: NoModelError, REGISTRY_UNAVAILABLE: RegistryUnavailable}
    kind = kinds.get(code)
    return ScanRejected(code, message) if kind is None else kind(message)


@dataclass(frozen=True)
class ModelRef:
    """The registered version that made a prediction.

    ``trained_at`` is the version's registration time: bcdiag registers a bundle at the
    end of the run that trained it.
    """

    name: str
    version: str
    sha256: str
    trained_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        trained = None if self.trained_at is None else self.trained_at.isoformat()
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "trained_at": trained}  # fmt: skip

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelRef:
        trained = body.get("trained_at")
        at = None if trained is None else datetime.fromisoformat(str(trained))
        return cls(str(body["name"]), str(body["version"]), str(body["sha256"]), at)


@dataclass(frozen=True)
class Finding:
    """One scan's result, without pixels.

    ``probability_malignant`` is calibrated to the model's training set, whose share of
    malignant images is ``training_prevalence`` (None for models trained before it was
    recorded); ``site_prevalence`` is this site's setting for the modality
    (``BCDIAG_PREVALENCE_MG`` / ``_US``, None when unset), and
    ``probability_at_site_prevalence`` the probability converted to it (prior shift,
    `bcdiag.models.metrics.at_prevalence`; None when either prevalence is unknown). The
    call stays at the threshold on ``probability_malignant``; sensitivity and
    specificity are the operating point's on validation data. ``inverted`` says the
    upload stores the image inverted (it is shown turned back, bright tissue on dark).
    """

    file: str
    probability_malignant: float
    call: str
    threshold: float
    sensitivity: float
    specificity: float
    modality: str
    model: ModelRef
    inverted: bool = False
    training_prevalence: float | None = None
    site_prevalence: float | None = None
    probability_at_site_prevalence: float | None = None

    def as_json(self) -> dict[str, Any]:
        """As ``bcdiag predict --json`` prints it: ``site_prevalence`` and
        ``probability_at_site_prevalence`` only when the site's prevalence is set (the
        latter null when the model did not record its training prevalence)."""
        site = (
            {}
            if self.site_prevalence is None
            else {
                "site_prevalence": self.site_prevalence,
                "probability_at_site_prevalence": self.probability_at_site_prevalence,
            }
        )
        return {
            "file": self.file,
            "probability_malignant": self.probability_malignant,
            "call": self.call,
            "threshold": self.threshold,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "modality": self.modality,
            "model": self.model.as_json(),
            "training_prevalence": self.training_prevalence,
            **site,
        }


HEAT_FLOOR = 0.4
"""Heat below this is not drawn (overlay) or outlined (viewer), so the anatomy under it
stays readable; heat is in [0, 1], 1 where Grad-CAM is highest."""


def heat_png(heat: NDArray[np.float32]) -> bytes:
    """`heat` (in [0, 1]) as an 8-bit greyscale PNG, 255 = 1."""
    levels = np.round(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(levels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def heat_from_png(data: bytes) -> NDArray[np.float32]:
    """The heat `heat_png` encoded, in [0, 1] (to 1/255)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


@dataclass(frozen=True)
class ScanResult:
    """A scored scan as the app shows and stores it.

    ``image_png`` is the upload as shown (whole, aspect kept, at most 1024 px, bright
    tissue on dark); ``heatmap_png`` the Grad-CAM overlay on it; ``heat_png`` the heat
    itself (`heat_png`) over the whole upload's extent, for overlays drawn on the image
    at any zoom; ``heatmap_blank`` says no region reached `HEAT_FLOOR`.
    """

    finding: Finding
    image_png: bytes
    heatmap_png: bytes
    heat_png: bytes
    heatmap_blank: bool

    def as_json(self) -> dict[str, Any]:
        return {
            **self.finding.as_json(),
            "inverted": self.finding.inverted,
            "image_png": base64.b64encode(self.image_png).decode("ascii"),
            "heatmap_png": base64.b64encode(self.heatmap_png).decode("ascii"),
            "heat_png": base64.b64encode(self.heat_png).decode("ascii"),
            "heatmap_blank": self.heatmap_blank,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ScanResult:
        finding = Finding(
            file=str(body["file"]),
            probability_malignant=float(body["probability_malignant"]),
            call=str(body["call"]),
            threshold=float(body["threshold"]),
            sensitivity=float(body["sensitivity"]),
            specificity=float(body["specificity"]),
            modality=str(body["modality"]),
            model=ModelRef.from_json(body["model"]),
            inverted=bool(body["inverted"]),
            training_prevalence=_optional(body.get("training_prevalence")),
            site_prevalence=_optional(body.get("site_prevalence")),
            probability_at_site_prevalence=_optional(body.get("probability_at_site_prevalence")),
        )
        return cls(
            finding,
            base64.b64decode(body["image_png"]),
            base64.b64decode(body["heatmap_png"]),
            base64.b64decode(body["heat_png"]),
            bool(body["heatmap_blank"]),
        )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Upload:
    """One file to score, as it was uploaded: ``modality`` (``"MG"`` / ``"US"``) is
    what the user chose for a PNG or JPEG; a DICOM file names its own."""

    data: bytes
    filename: str
    modality: str | None


class Scorer(Protocol):
    """Scores uploads: the inference service's client, or the same work in this process."""

    def score(self, upload: Upload) -> ScanResult:
        """The upload's result.

        Raises:
            ScanRejected: the file is not a usable scan, or not of its champion's modality.
            NoModelError, UnapprovedChampion, RegistryUnavailable: no model could score it.
            ServiceUnavailable: the inference service did not answer in time.
        """
        ...

    def ready(self) -> list[ModelRef]:
        """Load (or ask for) the champions ahead of the first upload: those ready."""
        ...
