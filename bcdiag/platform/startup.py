"""What `make run` starts, in order: `bcdiag.processes.supervise` runs the list."""

from __future__ import annotations

from bcdiag.platform.hub import hub_service
from bcdiag.platform.services import mlflow_service, scheduler_service
from bcdiag.processes import Service
from bcdiag.settings import Settings


def platform_services(settings: Settings) -> list[Service]:
    """Everything `make run` starts, in start order; append new services here.

    MLflow runs under this supervisor on 127.0.0.1. The hub (`bcdiag.platform.hub`) starts
    configurable-http-proxy, the researchers' servers, and as hub-managed services the
    hub-OAuth proxies that run the clinician app (Voilà, /services/bcdiag-app/) and the
    MLflow UI (/services/mlflow/).
    """
    return [mlflow_service(settings), hub_service(settings), scheduler_service(settings)]
