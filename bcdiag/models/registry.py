"""The model registry: log a bundle as a pyfunc, load a version, move the champion.

A registered version carries the bundle's sha256 as the tag ``bundle_sha256`` (also
set on the run); `load_version` loads nothing whose sha256 differs. `set_champion`
moves the ``champion`` alias unconditionally (the replaced one keeps
``previous-champion`` for a `rollback`); callers gate first and record the move in the
audit trail (`bcdiag.models.champion_trail`), without which no scan is scored by it:
`bcdiag.lifecycle.gate.promote_if_passes` for the retraining cycle and ``bcdiag
promote``, an audited ``--force`` (`bcdiag.models.champion_trail.force_champion`) otherwise.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bcdiag.errors import BcdiagError
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.model_card import ARTIFACT as CARD_ARTIFACT
from bcdiag.models.pyfunc import BUNDLE_ARTIFACT, MODEL_CODE, SHA256_KEY, signature, synthetic_png

MODEL_NAMES = {"US": "bcdiag-us", "MG": "bcdiag-mg"}
CHAMPION, PREVIOUS_CHAMPION = "champion", "previous-champion"
BUNDLE_FILE = "bundle.pt"


@dataclass(frozen=True)
class RegisteredModel:
    """What `log_bundle` logged and registered."""

    run_id: str
    model_uri: str
    registered_name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version, as bcdiag uses it."""

    name: str
    version: str
    run_id: str | None
    sha256: str
    aliases: tuple[str, ...]


def model_name_for(modality: str) -> str:
    """The registered model name of a modality (``bcdiag-us``, ``bcdiag-mg``)."""
    if modality not in MODEL_NAMES:
        raise BcdiagError(
            f"no registered model for modality {modality!r}; modalities: {', '.join(MODEL_NAMES)}"
        )
    return MODEL_NAMES[modality]


def log_bundle(
    bundle: ModelBundle,
    *,
    registered_name: str | None = None,
    example_png: bytes | None = None,
    card: str | None = None,
) -> RegisteredModel:
    """Log `bundle` as a pyfunc in the active run and register it.

    Args:
        bundle: the trained bundle.
        registered_name: default `model_name_for` the bundle's modality.
        example_png: a real scan for the input example; default a synthetic image.
        card: the model card (Markdown): logged with the model as ``model_card.md`` and
            made the registered version's description.
    """
    run = mlflow.active_run()
    if run is None:
        raise BcdiagError("log_bundle needs an active MLflow run: call mlflow.start_run()")
    name = registered_name or model_name_for(bundle.modality)
    example = pd.DataFrame(
        {"image": [example_png or synthetic_png(bundle.image_size)], "name": ["example.png"]}
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / BUNDLE_FILE
        sha256 = bundle.save(path)
        code = Path(folder) / "bcdiag_model.py"
        code.write_text(MODEL_CODE)
        artifacts = {BUNDLE_ARTIFACT: str(path)}
        if card is not None:
            artifacts[CARD_ARTIFACT] = str(Path(folder) / CARD_ARTIFACT)
            Path(artifacts[CARD_ARTIFACT]).write_text(card)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts=artifacts,
            model_config={SHA256_KEY: sha256},
            signature=signature(),
            input_example=example,
            pip_requirements=_requirements(),
            tags={SHA256_KEY: sha256, "modality": bundle.modality},
        )
    mlflow.set_tag(SHA256_KEY, sha256)
    version = mlflow.register_model(info.model_uri, name, tags={SHA256_KEY: sha256})
    if card is not None:
        MlflowClient().update_model_version(name, version.version, description=card)
    return RegisteredModel(run.info.run_id, info.model_uri, name, str(version.version), sha256)


def _requirements() -> list[str]:
    # bcdiag brings the rest; mlflow and torch pinned to what wrote the model files.
    return [f"{name}=={version(name)}" for name in ("bcdiag", "mlflow", "torch")]


def version_info(name: str, version: str | int) -> ModelVersionInfo:
    """A registered version; `BcdiagError` naming what exists when it does not."""
    client = MlflowClient()
    _registered_aliases(client, name)
    try:
        found = client.get_model_version(name, str(version))
    except MlflowException as error:
        versions = client.search_model_versions(f"name = '{name}'")
        known = ", ".join(sorted((str(v.version) for v in versions), key=int)) or "none"
        raise BcdiagError(f"{name} has no version {version}; its versions: {known}") from error
    sha256 = found.tags.get(SHA256_KEY)
    if not sha256:
        raise BcdiagError(f"{name} version {version} has no {SHA256_KEY} tag; it cannot be loaded")
    aliases = tuple(sorted(found.aliases))
    return ModelVersionInfo(name, str(found.version), found.run_id, sha256, aliases)


def load_version(name: str, version: str | int) -> tuple[ModelBundle, ModelVersionInfo]:
    """Download a version's bundle and load it, verifying the registered sha256."""
    info = version_info(name, version)
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{info.version}/artifacts/{BUNDLE_FILE}", dst_path=folder
        )
        return ModelBundle.load(Path(local), info.sha256), info


def latest_version(name: str) -> str:
    """The newest registered version of `name`."""
    versions = MlflowClient().search_model_versions(f"name = '{name}'")
    if not versions:
        raise BcdiagError(f"no version of {name} is registered yet; train one first")
    return str(max(int(v.version) for v in versions))


def champion(name: str) -> ModelVersionInfo | None:
    """The version with the ``champion`` alias; None if there is none or `name` is unregistered."""
    try:
        aliases = MlflowClient().get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    version = aliases.get(CHAMPION)
    return version_info(name, version) if version is not None else None


def set_champion(name: str, version: str | int) -> ModelVersionInfo | None:
    """Give `version` the ``champion`` alias, no questions asked; returns the one replaced.

    The replaced champion keeps ``previous-champion``; callers apply a gate first and
    record the move (`bcdiag.models.champion_trail`).
    """
    client = MlflowClient()
    candidate = version_info(name, version)
    current = champion(name)
    if current is not None and current.version != candidate.version:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current.version)
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    return current


def rollback(name: str) -> tuple[str, str]:
    """Move ``champion`` back to ``previous-champion``; returns (restored, withdrawn) versions.

    The ``previous-champion`` alias is removed, so a second rollback fails rather than
    flipping back to the withdrawn version.
    """
    client = MlflowClient()
    aliases = _registered_aliases(client, name)
    previous, current = aliases.get(PREVIOUS_CHAMPION), aliases.get(CHAMPION)
    if previous is None or current is None:
        raise BcdiagError(f"{name} has no {PREVIOUS_CHAMPION} to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    return previous, current


def version_of_run(name: str, run_id: str) -> str:
    """The version of `name` that MLflow run `run_id` registered."""
    versions = MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not versions:
        raise BcdiagError(f"MLflow run {run_id} registered no version of {name}")
    return str(max(int(v.version) for v in versions))


def _registered_aliases(client: MlflowClient, name: str) -> dict[str, str]:
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = ", ".join(m.name for m in client.search_registered_models()) or "none"
        raise BcdiagError(f"no registered model {name!r}; registered: {known}") from error
    return {alias: str(v) for alias, v in model.aliases.items()}
