"""The MLflow pyfunc of a `ModelBundle`: raw scan files in, calls out.

The model reads each file with `bcdiag.scans.read_scan` and scores it with
`ModelBundle.score` (the scoring path of the app and ``bcdiag predict`` too), so
every consumer (app, batch scoring, ``mlflow models serve``) gets the same calls.
The bundle file is loaded only after its sha256 matches the one in the model config.
"""

# No `from __future__ import annotations`: MLflow inspects predict's type hints when
# the class is created and warns about hints it sees as strings.

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema
from PIL import Image

from bcdiag.errors import BcdiagError, ScanRejected
from bcdiag.models.bundle import ModelBundle, Scored
from bcdiag.scans import Scan, read_scan

if TYPE_CHECKING:
    from torch import nn

BUNDLE_ARTIFACT = "bundle"
SHA256_KEY = "bundle_sha256"
OUTPUT_COLUMNS = ("probability_malignant", "call", "threshold", "error")
# Logged as the model's code (MLflow "models from code"), so the model holds no pickle.
MODEL_CODE = """from mlflow.models import set_model

from bcdiag.models.pyfunc import BcdiagPyfunc

set_model(BcdiagPyfunc())
"""


class BcdiagPyfunc(PythonModel):  # type: ignore[misc]  # mlflow is untyped here
    """Scores a DataFrame of scan files: ``image`` (bytes) and optional ``name``.

    Output, one row per input row: ``probability_malignant`` (NaN for a rejected
    file), ``call`` (``"suspicious"`` at or above the bundle's threshold, else
    ``"not suspicious"``; missing when rejected), ``threshold`` and ``error`` (the
    rejection message, else missing). A rejected file never fails the batch.
    """

    def __init__(self) -> None:
        self._bundle: ModelBundle | None = None
        self._nets: list[nn.Module] = []

    def load_context(self, context: PythonModelContext) -> None:
        """Load the bundle artifact, verifying the sha256 recorded in the model config."""
        sha256 = (context.model_config or {}).get(SHA256_KEY)
        if not sha256:
            raise BcdiagError(f"the model config has no {SHA256_KEY}; re-log the model")
        self._bundle = ModelBundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]), sha256)
        self._nets = self._bundle.networks()

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Probabilities and calls for each file; rejected files get an ``error``."""
        bundle = self._bundle
        if bundle is None:
            raise BcdiagError("the model is not loaded; load it with mlflow.pyfunc.load_model")
        names = model_input["name"] if "name" in model_input else [None] * len(model_input)
        labels = [
            str(name) if isinstance(name, str) and name else f"row {index}"
            for index, name in enumerate(names)
        ]
        read = [
            _read(data, label, bundle.modality)
            for data, label in zip(model_input["image"], labels, strict=True)
        ]
        scans = [
            (label, scan)
            for label, scan in zip(labels, read, strict=True)
            if not isinstance(scan, ScanRejected)
        ]
        scored = iter(bundle.score(scans, self._nets))
        threshold = bundle.operating_point.threshold
        rows = [
            _row(item if isinstance(item, ScanRejected) else next(scored), threshold)
            for item in read
        ]
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS), index=model_input.index)


def _read(data: object, label: str, modality: str) -> "Scan | ScanRejected":
    """The scan in a cell, or why it cannot be read."""
    try:
        return read_scan(_as_bytes(data), label, modality=modality)
    except ScanRejected as error:
        return error


def _row(
    outcome: "Scored | ScanRejected", threshold: float
) -> tuple[float, str | None, float, str | None]:
    """One output row: probability, call, threshold, error."""
    if isinstance(outcome, ScanRejected):
        return float("nan"), None, threshold, outcome.message
    return outcome.probability, outcome.call, threshold, None


def _as_bytes(value: object) -> bytes:
    # A missing cell (None/NaN) reads as an empty file, which read_scan rejects by name.
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""


def signature() -> "ModelSignature":
    """Input: ``image`` (binary), optional ``name``; output: the four result columns."""
    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image"), ColSpec("string", "name", required=False)]),
        outputs=Schema(
            [
                ColSpec("double", "probability_malignant"),
                ColSpec("string", "call", required=False),
                ColSpec("double", "threshold"),
                ColSpec("string", "error", required=False),
            ]
        ),
    )


def synthetic_png(size: int) -> bytes:
    """A small non-blank grayscale PNG (a radial gradient), e.g. as an input example."""
    axis = np.linspace(-1.0, 1.0, size)
    radius = np.hypot(*np.meshgrid(axis, axis))
    pixels = (255 * np.clip(1.0 - radius, 0.0, 1.0)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
