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
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from numpy.typing import NDArray
from torch import nn

from bcdiag.errors import BcdiagError, ScanRejected
from bcdiag.models.bundle import ModelBundle, Scored
from bcdiag.models.champion_trail import recorded_champion, target
from bcdiag.models.metrics import at_prevalence
from bcdiag.models.registry import CHAMPION, MODEL_NAMES, load_version
from bcdiag.scans import Scan
from bcdiag.serving.heatmaps import for_display, grad_cam, heat_for_display
from bcdiag.serving.results import (
    Finding,
    ModelRef,
    NoModelError,
    RegistryUnavailable,
    UnapprovedChampion,
)
from bcdiag.settings import get_settings
from bcdiag.storage import Storage

CHAMPION_REFUSED = "model.champion-refused"


@dataclass(frozen=True, kw_only=True)
class Prediction(Finding):
    """One scan's result with its pixels.

    ``heatmap`` is the Grad-CAM map over ``prepared``, the model's input (when asked
    for); ``display`` is the upload as shown to people (`heatmaps.for_display`) and
    ``display_heatmap`` the map laid onto it (`heatmaps.heat_for_display`).
    """

    heatmap: NDArray[np.float32] | None
    prepared: NDArray[np.float32]
    display: NDArray[np.float32]
    display_heatmap: NDArray[np.float32] | None = None


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
        self._loaded: dict[tuple[str, str, str, datetime], _Loaded] = {}

    def warm_up(self) -> list[ModelRef]:
        """Load every modality's champion and run it once (with Grad-CAM) on a blank
        image, so that the first scan pays neither model loading nor first-call costs.

        Returns:
            The champions now loaded; modalities without a usable one (or whose lookup
            failed: the first scan asks again) are left out.
        """
        ready = []
        for model in self._usable_champions():
            blank = np.zeros((model.bundle.image_size,) * 2, dtype=np.float32)
            model.bundle.score_prepared(blank[None], model.nets)
            with self._cam_lock:
                grad_cam(model.bundle, model.nets, blank)
            ready.append(model.ref)
        return ready

    def refresh(self) -> list[ModelRef]:
        """Look up each modality's champion (at most every ``champion_check_s``) and load a
        new one now, so that no upload waits for it; the champions ready are returned."""
        return [model.ref for model in self._usable_champions()]

    def _usable_champions(self) -> list[_Loaded]:
        """Each modality's champion, loaded; those without a usable one (or whose lookup
        failed) left out."""
        usable = []
        for modality in MODEL_NAMES:
            try:
                usable.append(self._champion(modality))
            except (NoModelError, UnapprovedChampion, RegistryUnavailable):
                continue
        return usable

    def loaded(self) -> list[ModelRef]:
        """The champions held in memory, as last looked up, without asking the registry."""
        with self._load_lock:
            return [model.ref for model in self._loaded.values()]

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
        (predicted,) = self.predict_many([(file, scan)], heatmap=heatmap)
        if isinstance(predicted, BcdiagError):
            raise predicted
        return predicted

    def predict_many(
        self, scans: Sequence[tuple[str, Scan]], *, heatmap: bool = False
    ) -> list[Prediction | BcdiagError]:
        """`predict` for many scans: those of one modality go through their champion as
        one batch. Per scan, in order, its `Prediction` or the error `predict` would
        raise for it (one failure never fails the rest).

        Raises:
            StorageError: the audit trail could not be read.
        """
        results: list[Prediction | BcdiagError | None] = [None] * len(scans)
        by_modality: dict[str | None, list[int]] = {}
        for index, (_, scan) in enumerate(scans):
            by_modality.setdefault(scan.metadata.modality, []).append(index)
        for modality, indices in by_modality.items():
            try:
                model = self._champion(modality)
            except (NoModelError, UnapprovedChampion, RegistryUnavailable) as error:
                for index in indices:
                    results[index] = error
                continue
            chosen = [scans[index] for index in indices]
            scored = model.bundle.score(chosen, model.nets)
            for index, (file, scan), item in zip(indices, chosen, scored, strict=True):
                results[index] = (
                    item
                    if isinstance(item, ScanRejected)
                    else self._prediction(model, file, scan, item, heatmap=heatmap)
                )
        return [result for result in results if result is not None]

    def _prediction(
        self, model: _Loaded, file: str, scan: Scan, scored: Scored, *, heatmap: bool
    ) -> Prediction:
        """`scored` with its operating point, prevalences and (asked for) heatmap."""
        bundle = model.bundle
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
        found = self._champion_version(uri, name)
        if found is None:
            with self._load_lock:  # a champion that is gone is not held either
                self._drop(uri, name)
            raise NoModelError(
                f"no champion model for {modality} yet: train and promote one ({name})"
            )
        # A model deleted and registered again numbers its versions from 1 anew: the
        # registration time tells its version 1 from the old one's.
        key = (uri, name, found.version, found.registered_at)
        with self._load_lock:
            if key not in self._loaded:
                bundle, info = load_version(name, found.version)
                ref = ModelRef(info.name, info.version, info.sha256, found.registered_at)
                self._drop(uri, name)  # the one it replaces (a request using it keeps it)
                self._loaded[key] = _Loaded(ref, bundle, bundle.networks())
            return self._loaded[key]

    def _drop(self, uri: str, name: str) -> None:
        """Forget the models held for `name` on `uri` (under ``_load_lock``)."""
        for key in [key for key in self._loaded if key[:2] == (uri, name)]:
            del self._loaded[key]

    def _champion_version(self, uri: str, name: str) -> _Version | None:
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

    def _approved_champion(self, uri: str, name: str) -> _Version | None:
        """The champion's version if it has a passing gate record; `UnapprovedChampion`
        (and an audit event) if not; None if there is no champion."""
        found = _registry_champion(uri, name)
        if found is None:
            return None
        given = self._storage
        with Storage.from_settings() if given is None else nullcontext(given) as storage:
            recorded = recorded_champion(storage, name)
            if recorded == found.version:
                return found
            storage.record_audit(
                user=getpass.getuser(),
                action=CHAMPION_REFUSED,
                target=target(name, found.version),
                details={"recorded_champion": recorded, "tracking_uri": uri},
            )
        raise UnapprovedChampion()


class _AliasLookup:
    """One champion lookup (registry, then audit trail), run in a daemon thread.

    A caller that stops waiting leaves it running (MLflow retries for minutes); later
    callers wait on the same request instead of piling up new ones.
    """

    def __init__(
        self, fetch: Callable[[], _Version | None], name: str, clock: Callable[[], float]
    ) -> None:
        self.done = threading.Event()
        self.version: _Version | None = None
        self.error: Exception | None = None
        self.finished_at = 0.0
        self._clock = clock
        threading.Thread(
            target=self._run, args=(fetch,), name=f"champion of {name}", daemon=True
        ).start()

    def _run(self, fetch: Callable[[], _Version | None]) -> None:
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


def _training_prevalence(bundle: ModelBundle) -> float | None:
    """The share of malignant training images, as `finish_bundle` records it (older
    bundles lack it)."""
    value = bundle.info.get("train_prevalence")
    return None if value is None else float(value)


def _site_prevalence(modality: str) -> float | None:
    """This site's prevalence setting for `modality` (None when unset)."""
    settings = get_settings()
    return {"MG": settings.prevalence_mg, "US": settings.prevalence_us}.get(modality)


class _Version(NamedTuple):
    """A registered version: its number, and when it was registered (UTC)."""

    version: str
    registered_at: datetime


def _registry_champion(uri: str, name: str) -> _Version | None:
    """The champion's version, None when the model or the alias does not exist."""
    client = MlflowClient(uri)
    try:
        version = client.get_registered_model(name).aliases.get(CHAMPION)
        if version is None:
            return None
        registered = client.get_model_version(name, str(version)).creation_timestamp
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryUnavailable(
            f"the model registry failed ({error.error_code}), so no model could be chosen; "
            "please try again in a few minutes"
        ) from error
    return _Version(str(version), datetime.fromtimestamp(int(registered) / 1000, UTC))
