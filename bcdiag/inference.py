"""Scoring one scan with the champion model of its modality.

`Predictor` looks up the ``champion`` alias of the scan's registered model on every
call (one registry request), so a newly promoted champion is used without a
restart; each (tracking URI, name, version) is downloaded, verified and loaded once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from bcdiag.bundle import ModelBundle
from bcdiag.errors import BcdiagError
from bcdiag.preprocess import prepare
from bcdiag.pyfunc import NOT_SUSPICIOUS, SUSPICIOUS
from bcdiag.registry import CHAMPION, MODEL_NAMES, load_version
from bcdiag.scans import Scan
from bcdiag.settings import get_settings


class NoModelError(BcdiagError):
    """No model can score this scan: unknown modality, or no champion registered yet."""


@dataclass(frozen=True)
class ModelRef:
    """The registered version that made a prediction."""

    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Prediction:
    """One scan's result; sensitivity and specificity are the operating point's on
    validation data, ``heatmap`` the Grad-CAM map over ``prepared`` (when asked for)."""

    file: str
    probability_malignant: float
    call: str
    threshold: float
    sensitivity: float
    specificity: float
    modality: str
    model: ModelRef
    heatmap: NDArray[np.float32] | None
    prepared: NDArray[np.float32]

    def as_json(self) -> dict[str, Any]:
        """The result without pixels, as one JSON-safe object."""
        return {
            "file": self.file,
            "probability_malignant": self.probability_malignant,
            "call": self.call,
            "threshold": self.threshold,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "modality": self.modality,
            "model": {
                "name": self.model.name,
                "version": self.model.version,
                "sha256": self.model.sha256,
            },
        }


@dataclass(frozen=True)
class _Loaded:
    ref: ModelRef
    bundle: ModelBundle
    nets: list[nn.Module]


class Predictor:
    """Scores scans with the current champions on MLflow's current tracking URI.

    Thread-safe: models load under a lock, and Grad-CAM (which hooks the shared
    networks) runs under another.
    """

    def __init__(self) -> None:
        torch.set_num_threads(get_settings().torch_threads)
        self._load_lock = threading.Lock()
        self._cam_lock = threading.Lock()
        self._loaded: dict[tuple[str, str, str], _Loaded] = {}

    def predict(self, scan: Scan, file: str, *, heatmap: bool = False) -> Prediction:
        """Probability of malignancy and the call at the model's operating point.

        Raises:
            NoModelError: the scan has no modality, or its modality no champion.
        """
        modality = scan.metadata.modality
        model = self._champion(modality)
        bundle = model.bundle
        prepared = prepare(
            scan.image,
            modality=modality,
            laterality=scan.metadata.laterality,
            size=bundle.image_size,
        )
        probability = float(bundle.probabilities(prepared[None], model.nets)[0])
        point = bundle.operating_point
        heat = None
        if heatmap:
            from bcdiag.heatmaps import grad_cam

            with self._cam_lock:
                heat = grad_cam(bundle, model.nets, prepared)
        return Prediction(
            file=file,
            probability_malignant=probability,
            call=SUSPICIOUS if probability >= point.threshold else NOT_SUSPICIOUS,
            threshold=point.threshold,
            sensitivity=point.sensitivity,
            specificity=point.specificity,
            modality=bundle.modality,
            model=model.ref,
            heatmap=heat,
            prepared=prepared,
        )

    def _champion(self, modality: str | None) -> _Loaded:
        import mlflow

        if modality is None:
            raise NoModelError(
                "no model for a scan of unknown modality: give the modality "
                f"({' or '.join(MODEL_NAMES)}) of PNG and JPEG files"
            )
        name = MODEL_NAMES.get(modality)
        if name is None:
            raise NoModelError(f"no model for {modality} yet")
        uri = mlflow.get_tracking_uri()
        version = _champion_version(uri, name)
        if version is None:
            raise NoModelError(
                f"no champion model for {modality} yet: train and promote one ({name})"
            )
        key = (uri, name, version)
        with self._load_lock:
            if key not in self._loaded:
                bundle, info = load_version(name, version)
                ref = ModelRef(info.name, info.version, info.sha256)
                self._loaded[key] = _Loaded(ref, bundle, bundle.networks())
            return self._loaded[key]


def _champion_version(uri: str, name: str) -> str | None:
    """The champion's version number, None when the model or the alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        aliases = MlflowClient(uri).get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise BcdiagError(f"the model registry at {uri} failed: {error.message}") from error
    version = aliases.get(CHAMPION)
    return None if version is None else str(version)
