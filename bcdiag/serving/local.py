"""Scoring uploads in this process: what each replica of the inference service runs
(`bcdiag.serving.service`), and what tests and tools use without the service.

An upload is judged as the app judges it (`bcdiag.scans.judge`), scored by the champion of
its modality (`Predictor.predict_many`: one batch per modality) and drawn: the scan as shown
and the Grad-CAM overlay on it, as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import numpy as np

from bcdiag.errors import BcdiagError, ScanRejected
from bcdiag.scans import Scan, judge, start_reader
from bcdiag.serving.heatmaps import overlay_png
from bcdiag.serving.inference import Prediction, Predictor
from bcdiag.serving.results import HEAT_FLOOR, Finding, ModelRef, ScanResult, Upload, heat_png


class LocalScorer:
    """A `bcdiag.serving.results.Scorer` that scores with a `Predictor` of its own."""

    def __init__(self, predictor: Predictor | None = None) -> None:
        self.predictor = predictor or Predictor()

    def ready(self) -> list[ModelRef]:
        """Start the scan reader (`start_reader`), load the champions and run each once
        (`Predictor.warm_up`)."""
        start_reader()
        return self.predictor.warm_up()

    def score(self, upload: Upload) -> ScanResult:
        """The upload's result (see `Scorer.score`)."""
        (result,) = self.score_many([upload])
        if isinstance(result, BcdiagError):
            raise result
        return result

    def score_many(self, uploads: Sequence[Upload]) -> list[ScanResult | BcdiagError]:
        """Per upload, in order, its result or why it has none.

        Raises:
            StorageError: the audit trail could not be read.
        """
        results: list[ScanResult | BcdiagError | None] = [None] * len(uploads)
        readable: list[tuple[int, str, Scan]] = []
        for index, upload in enumerate(uploads):
            verdict = judge(upload.data, upload.filename, modality=upload.modality)
            if verdict.scan is None:
                results[index] = ScanRejected(verdict.code or "rejected", verdict.message)
            else:
                readable.append((index, upload.filename, verdict.scan))
        predictions = self.predictor.predict_many(
            [(file, scan) for _, file, scan in readable], heatmap=True
        )
        for (index, _, _), prediction in zip(readable, predictions, strict=True):
            results[index] = (
                prediction if isinstance(prediction, BcdiagError) else drawn(prediction)
            )
        return [result for result in results if result is not None]


def drawn(prediction: Prediction) -> ScanResult:
    """A prediction made with its heatmap, as the two PNGs people see."""
    heat = prediction.display_heatmap
    if heat is None:
        raise ValueError("the prediction was made without its heatmap")
    finding = Finding(**{field.name: getattr(prediction, field.name) for field in fields(Finding)})
    # The plain image through the same scaling as the overlay, so that both line up.
    image_png = overlay_png(prediction.display, np.zeros_like(heat), alpha=0.0)
    heatmap_png = overlay_png(prediction.display, heat)
    return ScanResult(
        finding, image_png, heatmap_png, heat_png(heat), bool(heat.max() < HEAT_FLOOR)
    )
