"""What `make run` starts, in order (`bcdiag.processes.supervise` runs the list), the ports
it binds and where it records its processes."""

from __future__ import annotations

from pathlib import Path

from bcdiag.platform.hub import hub_service
from bcdiag.platform.services import mlflow_service, scheduler_service
from bcdiag.processes import Service
from bcdiag.settings import Settings


def platform_services(settings: Settings) -> list[Service]:
    """Everything `make run` starts, in start order; append new services here.

    MLflow runs under this supervisor on 127.0.0.1. The hub (`bcdiag.platform.hub`) starts
    configurable-http-proxy, the researchers' servers, and as hub-managed services the
    inference service (Ray Serve, `bcdiag.serving.service`) and the hub-OAuth proxies that
    run the clinician app (Voilà, /services/bcdiag-app/) and the MLflow UI
    (/services/mlflow/).
    """
    return [mlflow_service(settings), hub_service(settings), scheduler_service(settings)]


def platform_ports(settings: Settings) -> dict[str, int]:
    """Every fixed port `make run` binds on 127.0.0.1, by the variable that sets it (every
    ``*_port`` setting); the MLflow UI and researchers' servers take free ones."""
    names = [name for name in Settings.model_fields if name == "port" or name.endswith("_port")]
    return {f"BCDIAG_{name.upper()}": getattr(settings, name) for name in names}


def process_record(settings: Settings) -> Path:
    """Where `bcdiag run` lists the processes it runs, for the next start to clean up
    after a supervisor that was killed (`bcdiag.processes.reclaim`)."""
    return settings.home / "run-processes.json"
