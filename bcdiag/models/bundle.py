"""A trained model as one file: weights of every ensemble member plus everything
needed to use them the way they were validated.

`ModelBundle.score` is the one scoring path: scans in; prepared input, probability
and call at the operating point out. The pyfunc, the app, ``bcdiag predict`` and the
retraining gate (through `ModelBundle.score_prepared`) all score through it.

The file is a ``torch.save`` of plain tensors and numbers, loaded with
``weights_only=True`` (no unpickling of code) and only after its sha256 matches
the one recorded at registration.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from bcdiag.errors import BcdiagError, ScanRejected
from bcdiag.models.architectures import build_model
from bcdiag.models.calls import NOT_SUSPICIOUS, SUSPICIOUS
from bcdiag.models.metrics import apply_temperature
from bcdiag.preprocess import Framing, prepare_framed
from bcdiag.scans.rules import reject
from bcdiag.scans.types import Scan

FORMAT_VERSION = 1
SCORING_BATCH = 32  # images per forward pass: a whole split at 384 px would need ~7 GB


@dataclass(frozen=True)
class OperatingPointSpec:
    """The decision threshold and what it achieved on validation data."""

    threshold: float
    sensitivity: float
    specificity: float
    rule: str


@dataclass(frozen=True)
class Scored:
    """One image through a bundle: the model input, its calibrated probability of
    malignancy, the call at the bundle's operating point, and where the input came from
    in the scan (None for images given already prepared)."""

    prepared: NDArray[np.float32]
    probability: float
    call: str
    framing: Framing | None = None


@dataclass
class ModelBundle:
    """Ensemble weights + preprocessing + calibration + operating point."""

    architecture: str
    modality: str
    image_size: int
    mean: float
    std: float
    members: list[dict[str, torch.Tensor]]
    temperature: float = 1.0
    operating_point: OperatingPointSpec = field(
        default_factory=lambda: OperatingPointSpec(0.5, float("nan"), float("nan"), "default")
    )
    tta_flip: bool = True
    tta_rotations: tuple[float, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    # Set by `finish_bundle`: the validation split's probabilities that chose the
    # threshold, which the training run's evaluation reuses (a pass at 384 px takes
    # minutes on 2 cores). Not saved: a loaded bundle has None.
    valid_probabilities: NDArray[np.float32] | None = field(default=None, repr=False, compare=False)

    def networks(self) -> list[nn.Module]:
        """The ensemble members in eval mode."""
        nets = []
        for state in self.members:
            net = build_model(self.architecture)
            net.load_state_dict(state)
            nets.append(net.eval())
        return nets

    @property
    def flip_axis(self) -> int:
        """The axis of an (N, 1, H, W) batch the flip view turns: rows for mammograms
        (upside down: preprocessing keeps the chest wall on the left), else columns."""
        return 2 if self.modality == "MG" else 3

    def views(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The test-time views of a normalised batch (N, 1, H, W) whose logits are averaged:
        the image, its flip (`tta_flip`: upside down for mammograms, whose chest wall
        preprocessing puts on the left; mirrored otherwise), and each of them turned by
        `tta_rotations` degrees.
        """
        upright = [batch, batch.flip(self.flip_axis)] if self.tta_flip else [batch]
        return upright + [rotate(view, d) for d in self.tta_rotations for view in upright]

    def logits(
        self, images: NDArray[np.float32], nets: list[nn.Module] | None = None
    ) -> NDArray[np.float32]:
        """Ensemble-mean malignancy logit per prepared image (N, size, size)."""
        nets = nets if nets is not None else self.networks()
        pixels = torch.from_numpy(np.ascontiguousarray(images))[:, None]
        means = []
        with torch.inference_mode():
            for start in range(0, len(images), SCORING_BATCH):
                batch = (pixels[start : start + SCORING_BATCH] - self.mean) / self.std
                outs = [net(view) for net in nets for view in self.views(batch)]
                means.append(sum(out[:, 1] - out[:, 0] for out in outs) / len(outs))
        return torch.cat(means).numpy().astype(np.float32) if means else np.zeros(0, np.float32)

    def probabilities(
        self, images: NDArray[np.float32], nets: list[nn.Module] | None = None
    ) -> NDArray[np.float32]:
        """Calibrated probability of malignancy per prepared image."""
        return apply_temperature(self.logits(images, nets), self.temperature).astype(np.float32)

    def call(self, probability: float) -> str:
        """`SUSPICIOUS` at or above the operating point's threshold, else `NOT_SUSPICIOUS`."""
        return SUSPICIOUS if probability >= self.operating_point.threshold else NOT_SUSPICIOUS

    def score_prepared(
        self, images: NDArray[np.float32], nets: list[nn.Module] | None = None
    ) -> list[Scored]:
        """Probability and call per prepared image (N, size, size), scored as one batch."""
        probabilities: list[float] = self.probabilities(images, nets).tolist()
        return [
            Scored(image, probability, self.call(probability))
            for image, probability in zip(images, probabilities, strict=True)
        ]

    def score(
        self, scans: Sequence[tuple[str, Scan]], nets: list[nn.Module] | None = None
    ) -> list[Scored | ScanRejected]:
        """Prepare each scan as training did and score them as one batch.

        Args:
            scans: each scan with the file name its rejection would name.
            nets: `networks()`, when the caller keeps them loaded.

        Returns:
            Per scan, in order: its `Scored`, or a ``wrong-modality`` `ScanRejected`
            when its modality is not the bundle's (one rejection never fails the rest).
        """
        prepared: list[tuple[NDArray[np.float32], Framing] | ScanRejected] = []
        for name, scan in scans:
            try:
                prepared.append(self._prepare(name, scan))
            except ScanRejected as error:
                prepared.append(error)
        framed = [item for item in prepared if not isinstance(item, ScanRejected)]
        images = np.stack([image for image, _ in framed]) if framed else None
        scored = iter(
            replace(item, framing=framing)
            for item, (_, framing) in zip(
                self.score_prepared(images, nets) if images is not None else (), framed, strict=True
            )
        )
        return [item if isinstance(item, ScanRejected) else next(scored) for item in prepared]

    def _prepare(self, name: str, scan: Scan) -> tuple[NDArray[np.float32], Framing]:
        """The model input for `scan` and its framing (`bcdiag.preprocess.prepare_framed`
        at the bundle's size)."""
        modality = scan.metadata.modality
        if modality is not None and modality != self.modality:
            raise reject(
                "wrong-modality",
                name,
                f"this is a {modality} image, but this model reads {self.modality} images. "
                f"Use the bcdiag {modality} model.",
            )
        laterality = scan.metadata.laterality
        return prepare_framed(
            scan.image, modality=modality, laterality=laterality, size=self.image_size
        )

    def save(self, path: Path) -> str:
        """Write the bundle; returns its sha256 (record it to load it later)."""
        payload = {
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture,
            "modality": self.modality,
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "members": self.members,
            "temperature": self.temperature,
            "operating_point": asdict(self.operating_point),
            "tta_flip": self.tta_flip,
            "tta_rotations": list(self.tta_rotations),
            "info": self.info,
        }
        torch.save(payload, path)
        return file_sha256(path)

    @classmethod
    def load(cls, path: Path, sha256: str) -> ModelBundle:
        """Load a bundle whose sha256 must equal `sha256` (checked before reading it)."""
        actual = file_sha256(path)
        if actual != sha256:
            raise BcdiagError(
                f"model file {path.name} has sha256 {actual}, but {sha256} was registered; "
                "refusing to load it (the file changed since registration)"
            )
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format_version") != FORMAT_VERSION:
            raise BcdiagError(f"model file {path.name} has an unknown format version")
        return cls(
            architecture=payload["architecture"],
            modality=payload["modality"],
            image_size=int(payload["image_size"]),
            mean=float(payload["mean"]),
            std=float(payload["std"]),
            members=payload["members"],
            temperature=float(payload["temperature"]),
            operating_point=OperatingPointSpec(**payload["operating_point"]),
            tta_flip=bool(payload["tta_flip"]),
            tta_rotations=tuple(float(d) for d in payload.get("tta_rotations", ())),
            info=dict(payload["info"]),
        )


def rotate(batch: torch.Tensor, degrees: float) -> torch.Tensor:
    """`batch` (N, C, H, W) turned by `degrees` about its centre, borders reflected
    (as fastai's rotation augmentation pads in training)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=batch.dtype)
    grid = F.affine_grid(theta.expand(len(batch), 2, 3), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, padding_mode="reflection", align_corners=False)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
