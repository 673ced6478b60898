"""Every ``BCDIAG_*`` environment variable, typed and documented where declared.

Read settings through `get_settings()`; tests change the environment and call
``get_settings.cache_clear()``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bcdiag.errors import ConfigurationError


def _default_home() -> Path:
    return Path.cwd() / "var"


def _default_notebooks() -> Path:
    return Path(__file__).resolve().parent.parent / "notebooks"


class Settings(BaseSettings):
    """bcdiag's configuration, read from ``BCDIAG_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BCDIAG_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Folder for bcdiag's state (database, blobs, MLflow store). "
        "Default: ./var under the current directory.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the relational database, e.g. "
        "postgresql+psycopg2://user@host/db. Default: SQLite file <home>/bcdiag.sqlite.",
    )
    storage_url: str | None = Field(
        default=None,
        description="Where image blobs go: file:///path or gs://bucket/prefix. "
        "Default: file://<home>/blobs.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Folder holding the public data sets (breastmnist/, mias/, dicom/). "
        "Tests and benchmarks read shared data only through this setting.",
    )
    researcher_homes: Path = Field(
        default=Path("/home"),
        description="Where `bcdiag users add --group researchers` creates the home of each "
        "researcher's own OS account (bcdiag-NAME).",
    )
    notebooks_dir: Path = Field(
        default_factory=_default_notebooks,
        description="Folder of bcdiag's notebooks (train, evaluate, app), run by papermill "
        "and served to researchers. Default: notebooks/ of the source tree.",
    )
    port: int = Field(
        default=8000, description="Port of the platform's front door on 127.0.0.1 (`make run`)."
    )
    app_port: int = Field(
        default=8866, description="Port of the clinician app (Voilà) on 127.0.0.1 (`make run`)."
    )
    mlflow_port: int = Field(
        default=5000, description="Port of the MLflow tracking server, bound to 127.0.0.1 only."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server URL. Default: http://127.0.0.1:<mlflow_port>.",
    )
    torch_threads: int = Field(
        default=1,
        description="CPU threads torch uses for training and inference. bcdiag's models "
        "are small: measured on 2 cores, one thread trained 10x faster than two whenever "
        "another process was busy (OpenMP threads spin against each other).",
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="Address of an existing Dask scheduler for batch scoring (`bcdiag "
        "predict` on many files), e.g. a Dask Gateway cluster on the hub; its workers "
        "must see the same file paths. Default: a LocalCluster of up to 2 processes.",
    )
    max_pixels: int = Field(
        default=120_000_000,
        description="Largest Rows x Columns x Frames accepted, checked before decoding.",
    )
    max_decoded_bytes: int = Field(
        default=1_000_000_000,
        description="Largest decoded pixel buffer (pixels x bytes per sample x samples).",
    )
    min_side_px: int = Field(
        default=28,
        description="Smallest Rows or Columns accepted. 28 lets BreastMNIST's 28x28 "
        "ultrasound images through; smaller images are thumbnails or icons.",
    )
    validate_timeout_s: float = Field(
        default=10.0, description="Seconds one file may take to be read and judged."
    )
    validate_memory_bytes: int = Field(
        default=2_000_000_000,
        description="Address-space limit of the process that judges one file.",
    )

    # inference service
    scoring_port: int = Field(
        default=8878,
        description="Port of the inference service (Ray Serve's HTTP proxy) on 127.0.0.1: "
        "it holds each modality's champion and scores every upload of the clinician app.",
    )
    scoring_url: str | None = Field(
        default=None,
        description="Address of the inference service the app asks for scores. Default: "
        "http://127.0.0.1:<scoring_port>.",
    )
    scoring_timeout_s: float = Field(
        default=10.0,
        description="Seconds the app waits for the inference service, to connect and again "
        "to get its answer, before it tells the clinician the service is unavailable (the "
        "scan stays stored, to be analysed again).",
    )
    scoring_replicas: int = Field(
        default=1,
        ge=1,
        description="Replicas of the inference service's scorer on this machine; each "
        "holds every champion and scores one batch at a time.",
    )
    scoring_max_batch: int = Field(
        default=8,
        ge=1,
        description="Most uploads a replica scores as one batch (Ray Serve's dynamic "
        "batching: requests that arrive within 10 ms of each other are scored together).",
    )

    # clinician app
    champion_check_s: float = Field(
        default=30.0,
        description="Seconds a looked-up champion alias is reused before the model registry "
        "is asked again: a newly promoted champion reaches running apps within this time "
        "(a modality's first champion at the next upload: 'none' is never reused), and "
        "uploads in between pay no registry request. 0: ask on every analysis.",
    )
    registry_timeout_s: float = Field(
        default=10.0,
        description="Seconds an analysis waits for the model registry's answer before it "
        "reports the registry unreachable (MLflow's own client retries for ~4 minutes).",
    )
    prevalence_mg: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="This site's share of malignant mammograms, strictly between 0 and 1 "
        "(e.g. 0.006 in screening; bcdiag's training sets hold far more). When set, cards, "
        "reports and `bcdiag predict` also give each score as the probability at this "
        "prevalence (prior shift), for models that recorded their training prevalence; "
        "the call stays at the validated threshold. Default: unset (scores as calibrated "
        "to the training set only).",
    )
    prevalence_us: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="As BCDIAG_PREVALENCE_MG, for breast ultrasound.",
    )

    # retraining
    retrain_cron: str = Field(
        default="0 3 * * 0",
        description="When the scheduler runs a retraining cycle: a cron expression in UTC "
        "(croniter; a sixth field gives seconds). Default: weekly, Sundays 03:00.",
    )
    retrain_modalities: list[str] = Field(
        default=["US", "MG"],
        description="Modalities a cycle retrains (JSON list); one without base data is skipped.",
    )
    retrain_recipe: dict[str, Any] = Field(
        default={},
        description="Recipe fields (bcdiag.models.recipe.Recipe, JSON object) replacing the data "
        'set\'s recipe in scheduled and first-start cycles, e.g. {"epochs": 20}; an unknown '
        "key or a wrong value stops the cycle with a message naming it. "
        "`bcdiag retrain --epochs/--members` override these in turn.",
    )
    train_on_first_start: bool = Field(
        default=True,
        description="When `make run` starts and a modality in BCDIAG_RETRAIN_MODALITIES has no "
        "champion, the scheduler runs a cycle for it at once (base data from BCDIAG_DATA_DIR, "
        "else BreastMNIST downloaded into <home>/data with its checksum verified).",
    )
    scheduler_port: int = Field(
        default=8877,
        description="Port of the retraining scheduler's /health status page on 127.0.0.1.",
    )
    gate_auc_margin: float = Field(
        default=0.02,
        description="Non-inferiority margin on AUC: a challenger is promoted only if the "
        "lower bound of the 95% DeLong interval of AUC(challenger) - AUC(champion) on the "
        "locked test set is above minus this margin.",
    )
    gate_sensitivity_margin: float = Field(
        default=0.05,
        description="A challenger's locked-test sensitivity at its own (validation-chosen) "
        "threshold may be at most this much below the champion's.",
    )
    gate_specificity_margin: float = Field(
        default=0.10,
        description="A challenger's locked-test specificity at its own (validation-chosen) "
        "threshold may be at most this much below the champion's, unless its sensitivity "
        "gained at least as much.",
    )
    locked_test_us: list[str] = Field(
        default_factory=list,
        description="Locked test set of the US gate: shell patterns over the base set's "
        "patient ids (JSON list); empty (the default): the base set's own fixed test split "
        "(busi256: 98 images).",
    )
    locked_test_mg: list[str] = Field(
        default_factory=list,
        description="As BCDIAG_LOCKED_TEST_US, for mammograms (rsna640's test split: 423 "
        "images of its test patients).",
    )
    base_folder_us: Path | None = Field(
        default=None,
        description="This site's own labelled ultrasound scans (a `--dataset folder` folder "
        "whose labels.csv has a split column) to retrain on instead of busi256; its "
        "test rows are then the locked test set of the gate.",
    )
    base_folder_mg: Path | None = Field(
        default=None,
        description="As BCDIAG_BASE_FOLDER_US, for mammograms instead of rsna640.",
    )

    # platform (hub)
    hub_api_port: int = Field(
        default=8081,
        description="Port of the JupyterHub API on 127.0.0.1 (proxy and services call it).",
    )
    proxy_api_port: int = Field(
        default=8001, description="Port of configurable-http-proxy's REST API on 127.0.0.1."
    )
    app_proxy_port: int = Field(
        default=8867,
        description="Port on 127.0.0.1 of the hub-OAuth proxy in front of the clinician app "
        "(service bcdiag-app, reached as /services/bcdiag-app/).",
    )
    mlflow_proxy_port: int = Field(
        default=5001,
        description="Port on 127.0.0.1 of the hub-OAuth proxy in front of the MLflow UI "
        "(service mlflow, reached as /services/mlflow/).",
    )
    admin_user: str = Field(
        default="admin", description="Name of the first admin, created by `bcdiag run` once."
    )
    admin_password: str | None = Field(
        default=None,
        description="Password of the first admin (at least 12 characters). Default: a random "
        "one, generated on first start and printed once.",
    )
    session_hours: float = Field(
        default=8.0,
        description="Hours a hub login lasts (the login cookie's age); then users sign in again.",
    )
    idle_minutes: int = Field(
        default=60,
        description="Minutes after which an idle app kernel or researcher server is shut down.",
    )
    lockout_seconds: int = Field(
        default=600,
        description="Seconds an account stays locked after 5 failed logins in a row.",
    )
    app_pool_size: int = Field(
        default=1,
        description="Preheated Voilà kernels kept ready for the next clinician (0: none); "
        "size it to the clinicians who open the app at once (about 235 MiB each).",
    )
    app_behind_hub: bool = Field(
        default=False,
        description="Set by `bcdiag run` for the app it serves behind the hub: a page whose "
        "request lacks the hub proxy's user header is then refused instead of falling back "
        "to the OS account.",
    )
    app_max_kernels: int = Field(
        default=10,
        description="Most live app kernels (one per open clinician page, plus the "
        "preheated pool); more pages are refused. Each holds about 300 MiB "
        "(benchmarks/hub_load.py), so size this to the machine's memory; it must exceed "
        "BCDIAG_APP_POOL_SIZE.",
    )

    def required_data_dir(self, override: Path | None = None) -> Path:
        """`override`, else `data_dir`; a clear error when neither is set."""
        folder = override or self.data_dir
        if folder is None:
            raise ConfigurationError("set BCDIAG_DATA_DIR or pass --data-dir")
        return folder

    @property
    def base_data_dir(self) -> Path:
        """Where retraining reads base data sets: `data_dir` if it is a folder, else
        <home>/data (where first start downloads BreastMNIST)."""
        if self.data_dir is not None and self.data_dir.is_dir():
            return self.data_dir
        return self.home / "data"

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite under `home`."""
        return self.database_url or f"sqlite:///{self.home / 'bcdiag.sqlite'}"

    @property
    def resolved_scoring_url(self) -> str:
        """The inference service's address: this setting, else the one `make run` starts."""
        return self.scoring_url or f"http://127.0.0.1:{self.scoring_port}"

    @property
    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URL: this setting, else MLflow's own MLFLOW_TRACKING_URI,
        else the local server `make run` starts."""
        return (
            self.mlflow_tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"http://127.0.0.1:{self.mlflow_port}"
        )

    @property
    def resolved_storage_url(self) -> str:
        """The blob store URL, defaulting to a folder under `home`."""
        return self.storage_url or (self.home / "blobs").resolve().as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (cached; clear the cache after changing env)."""
    return Settings()
