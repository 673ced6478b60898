"""Scoring one scan with the champion model of its modality.

`Predictor` looks up the ``champion`` alias of the scan's registered model at most
every ``champion_check_s`` seconds (`bcdiag.settings`), so a newly promoted champion
is used without a restart while most uploads pay no registry request. A lookup runs
in its own daemon thread and is waited for at most ``registry_timeout_s``: a registry
that is down costs an analysis that many seconds and a message, not MLflow's minutes
of retries. Each (tracking URI, name, version) is downloaded, verified and loaded
once; `Predictor.warm_up` does that ahead of the first scan.

A champion is used only if it has a passing gate record: it is the version bcdiag last
made champion according to its own audit trail (`bcdiag.models.champion_trail`), which
researchers cannot reach, unlike MLflow. Any other champion (an alias moved outside
``bcdiag promote`` / ``rollback`` / the retraining cycle) is refused with
`UnapprovedChampion` and a ``model.champion-refused`` audit event, at every lookup.
"""

from __future__ import annotations

import getpass
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from numpy.typing import NDArray
from torch import nn

from bcdiag.errors import BcdiagError, ScanRejected
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.champion_trail import recorded_champion, target
from bcdiag.models.metrics import at_prevalence
from bcdiag.models.registry import CHAMPION, MODEL_NAMES, load_version
from bcdiag.scans import Scan
from bcdiag.serving.heatmaps import for_display, grad_cam, heat_for_display
from bcdiag.settings import get_settings
from bcdiag.storage import Storage

CHAMPION_REFUSED = "model.champion-refused"


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


@dataclass(frozen=True)
class Prediction:
    """One scan's result.

    ``probability_malignant`` is calibrated to the model's training set, whose share of
    malignant images is ``training_prevalence`` (None for models trained before it was
    recorded); ``site_prevalence`` is this site's setting for the modality
    (``BCDIAG_PREVALENCE_MG`` / ``_US``, None when unset), and
    ``probability_at_site_prevalence`` the probability converted to it (prior shift,
    `bcdiag.models.metrics.at_prevalence`; None when either prevalence is unknown). The
    call stays at the threshold on ``probability_malignant``; sensitivity and
    specificity are the operating point's on validation data.

    ``heatmap`` is the Grad-CAM map over ``prepared``, the model's input (when asked
    for); ``display`` is the upload as shown to people (`heatmaps.for_display`) and
    ``display_heatmap`` the map laid onto it (`heatmaps.heat_for_display`);
    ``inverted`` says the upload stores the image inverted, and ``display`` shows it
    turned back, bright tissue on dark.
    """

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
    display: NDArray[np.float32]
    display_heatmap: NDArray[np.float32] | None = None
    inverted: bool = False
    training_prevalence: float | None = None
    site_prevalence: float | None = None
    probability_at_site_prevalence: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The result without pixels, as one JSON-safe object: ``site_prevalence`` and
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
            "model": {
                "name": self.model.name,
                "version": self.model.version,
                "sha256": self.model.sha256,
                "trained_at": _iso(self.model.trained_at),
            },
            "training_prevalence": self.training_prevalence,
            **site,
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

    Args:
        storage: the audit trail champions are checked against and refusals recorded
            in; default the configured storage, opened for each lookup.
        champion_check_s: seconds an alias lookup is reused; default the setting.
        registry_timeout_s: seconds to wait for a lookup; default the setting.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        storage: Storage | None = None,
        champion_check_s: float | None = None,
        registry_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = get_settings()
        torch.set_num_threads(settings.torch_threads)
        self._check_s = settings.champion_check_s if champion_check_s is None else champion_check_s
        self._timeout_s = (
            settings.registry_timeout_s if registry_timeout_s is None else registry_timeout_s
        )
        self._clock = clock
        self._storage = storage
        self._load_lock = threading.Lock()
        self._cam_lock = threading.Lock()
        self._lookup_lock = threading.Lock()
        self._lookups: dict[tuple[str, str], _AliasLookup] = {}
        self._loaded: dict[tuple[str, str, str], _Loaded] = {}

    def warm_up(self) -> list[ModelRef]:
        """Load every modality's champion and run it once (with Grad-CAM) on a blank
        image, so that the first scan pays neither model loading nor first-call costs.

        Returns:
            The champions now loaded; modalities without a usable one are left out.
        """
        ready = []
        for modality in MODEL_NAMES:
            try:
                model = self._champion(modality)
            except (NoModelError, UnapprovedChampion):
                continue
            blank = np.zeros((model.bundle.image_size,) * 2, dtype=np.float32)
            model.bundle.score_prepared(blank[None], model.nets)
            with self._cam_lock:
                grad_cam(model.bundle, model.nets, blank)
            ready.append(model.ref)
        return ready

    def predict(self, scan: Scan, file: str, *, heatmap: bool = False) -> Prediction:
        """Probability of malignancy and the call at the model's operating point
        (`ModelBundle.score`, as the pyfunc scores).

        Raises:
            NoModelError: the scan has no modality, or its modality no champion.
            UnapprovedChampion: the champion has no passing gate record (audited).
            RegistryUnavailable: the registry failed or did not answer in time.
            StorageError: the audit trail could not be read.
            ScanRejected: the champion reads another modality (``wrong-modality``).
        """
        model = self._champion(scan.metadata.modality)
        bundle = model.bundle
        (scored,) = bundle.score([(file, scan)], model.nets)
        if isinstance(scored, ScanRejected):
            raise scored
        framing = scored.framing
        if framing is None:
            raise RuntimeError("ModelBundle.score returned a result without its framing")
        heat = shown_heat = None
        display = for_display(scan.image, framing)
        if heatmap:
            with self._cam_lock:
                heat = grad_cam(bundle, model.nets, scored.prepared)
            shown_heat = heat_for_display(framing, heat, display.shape)
        trained, site = _training_prevalence(bundle), _site_prevalence(bundle.modality)
        at_site = (
            None
            if trained is None or site is None
            else at_prevalence(scored.probability, trained, site)
        )
        point = bundle.operating_point
        return Prediction(
            file=file,
            probability_malignant=scored.probability,
            call=scored.call,
            threshold=point.threshold,
            sensitivity=point.sensitivity,
            specificity=point.specificity,
            modality=bundle.modality,
            model=model.ref,
            heatmap=heat,
            prepared=scored.prepared,
            display=display,
            display_heatmap=shown_heat,
            inverted=framing.inverted,
            training_prevalence=trained,
            site_prevalence=site,
            probability_at_site_prevalence=at_site,
        )

    def _champion(self, modality: str | None) -> _Loaded:
        if modality is None:
            raise NoModelError(
                "no model for a scan of unknown modality: give the modality "
                f"({' or '.join(MODEL_NAMES)}) of PNG and JPEG files"
            )
        name = MODEL_NAMES.get(modality)
        if name is None:
            raise NoModelError(f"no model for {modality} yet")
        uri = mlflow.get_tracking_uri()
        version = self._champion_version(uri, name)
        if version is None:
            raise NoModelError(
                f"no champion model for {modality} yet: train and promote one ({name})"
            )
        key = (uri, name, version)
        with self._load_lock:
            if key not in self._loaded:
                bundle, info = load_version(name, version)
                trained_at = _registered_at(uri, name, info.version)
                ref = ModelRef(info.name, info.version, info.sha256, trained_at)
                self._loaded[key] = _Loaded(ref, bundle, bundle.networks())
            return self._loaded[key]

    def _champion_version(self, uri: str, name: str) -> str | None:
        """The champion alias, from a lookup younger than ``champion_check_s`` if any."""
        key = (uri, name)
        with self._lookup_lock:
            lookup = self._lookups.get(key)
            if lookup is None or lookup.expired(self._clock(), self._check_s):
                lookup = _AliasLookup(lambda: self._approved_champion(uri, name), name, self._clock)
                self._lookups[key] = lookup
        if not lookup.done.wait(self._timeout_s):
            raise RegistryUnavailable(
                f"the model registry did not answer within {self._timeout_s:g} s, so no "
                "model could be chosen; please try again in a few minutes"
            )
        if lookup.error is not None:
            raise lookup.error
        return lookup.version

    def _approved_champion(self, uri: str, name: str) -> str | None:
        """The champion's version if it has a passing gate record; `UnapprovedChampion`
        (and an audit event) if not; None if there is no champion."""
        version = _registry_champion(uri, name)
        if version is None:
            return None
        given = self._storage
        with Storage.from_settings() if given is None else nullcontext(given) as storage:
            recorded = recorded_champion(storage, name)
            if recorded == version:
                return version
            storage.record_audit(
                user=getpass.getuser(),
                action=CHAMPION_REFUSED,
                target=target(name, version),
                details={"recorded_champion": recorded, "tracking_uri": uri},
            )
        raise UnapprovedChampion()


class _AliasLookup:
    """One champion lookup (registry, then audit trail), run in a daemon thread.

    A caller that stops waiting leaves it running (MLflow retries for minutes); later
    callers wait on the same request instead of piling up new ones.
    """

    def __init__(
        self, fetch: Callable[[], str | None], name: str, clock: Callable[[], float]
    ) -> None:
        self.done = threading.Event()
        self.version: str | None = None
        self.error: Exception | None = None
        self.finished_at = 0.0
        self._clock = clock
        threading.Thread(
            target=self._run, args=(fetch,), name=f"champion of {name}", daemon=True
        ).start()

    def _run(self, fetch: Callable[[], str | None]) -> None:
        try:
            self.version = fetch()
        except Exception as error:  # noqa: BLE001 - re-raised in the thread that waits
            self.error = error
        finally:
            self.finished_at = self._clock()
            self.done.set()

    def expired(self, now: float, check_s: float) -> bool:
        """Finished with an error or with no champion, or answered ``check_s`` seconds ago.

        "No champion" is never kept: the upload after a first promotion uses it at once.
        """
        if not self.done.is_set():
            return False
        if self.error is not None or self.version is None:
            return True
        return now - self.finished_at >= check_s


def _registered_at(uri: str, name: str, version: str) -> datetime:
    """When ``version`` of ``name`` was registered (UTC)."""
    found = MlflowClient(uri).get_model_version(name, version)
    return datetime.fromtimestamp(int(found.creation_timestamp) / 1000, UTC)


def _training_prevalence(bundle: ModelBundle) -> float | None:
    """The share of malignant training images, as `finish_bundle` records it (older
    bundles lack it)."""
    value = bundle.info.get("train_prevalence")
    return None if value is None else float(value)


def _site_prevalence(modality: str) -> float | None:
    """This site's prevalence setting for `modality` (None when unset)."""
    settings = get_settings()
    return {"MG": settings.prevalence_mg, "US": settings.prevalence_us}.get(modality)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _registry_champion(uri: str, name: str) -> str | None:
    """The champion's version number, None when the model or the alias does not exist."""
    try:
        aliases = MlflowClient(uri).get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryUnavailable(
            f"the model registry failed ({error.error_code}), so no model could be chosen; "
            "please try again in a few minutes"
        ) from error
    version = aliases.get(CHAMPION)
    return None if version is None else str(version)
