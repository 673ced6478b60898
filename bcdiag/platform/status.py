"""What the admin panel says about the platform's own servers: the inference service
(which champions it holds), the retraining scheduler (a cycle under way, the next one)
and MLflow, each asked on its ``/health`` on 127.0.0.1 when an admin opens the panel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from bcdiag.platform.services import mlflow_service, scheduler_service, scoring_service
from bcdiag.settings import Settings

PROBE_TIMEOUT_S = 1.0  # the page waits for each probe; a server this slow is reported


@dataclass(frozen=True)
class ServerStatus:
    """One server as the admin panel lists it."""

    name: str
    ok: bool
    detail: str


def _utc(stamp: str) -> str:
    return f"{datetime.fromisoformat(stamp):%a %d %b %H:%M} UTC"


def _scoring(health: dict[str, Any]) -> str:
    models = [f"{m['name']} version {m['version']}" for m in health.get("models", [])]
    return "holds " + ", ".join(models) if models else "holds no champion yet"


def _scheduler(health: dict[str, Any]) -> str:
    parts = []
    if health.get("running_since"):
        parts.append(f"a retraining cycle is running since {_utc(health['running_since'])}")
    if health.get("next"):
        parts.append(f"next cycle {_utc(health['next'])}")
    if health.get("firings"):
        last = health["firings"][-1]
        parts.append(f"last cycle {_utc(last['at'])}: {last['result']} ({last['detail']})")
    return "; ".join(parts) or f"schedule {health.get('cron')}"


def _probe(name: str, url: str, describe: Callable[[dict[str, Any]], str]) -> ServerStatus:
    try:
        response = requests.get(url, timeout=PROBE_TIMEOUT_S)
        response.raise_for_status()
        health = response.json() if "json" in response.headers.get("Content-Type", "") else {}
    except requests.RequestException as error:
        reason = "no answer" if isinstance(error, requests.ConnectionError) else str(error)
        return ServerStatus(name, False, f"not answering at {url} ({reason})")
    return ServerStatus(name, True, describe(health))


def platform_status(settings: Settings) -> list[ServerStatus]:
    """Each server `make run` starts besides the hub, asked now."""
    return [
        _probe("Inference service", scoring_service(settings).health_url, _scoring),
        _probe("Retraining scheduler", scheduler_service(settings).health_url, _scheduler),
        _probe("MLflow", mlflow_service(settings).health_url, lambda _: "answering"),
    ]


def admin_status(settings: Settings) -> Callable[[Any], list[ServerStatus]]:
    """The hub template variable ``bcdiag_status``: `platform_status` for an admin, nothing
    for anyone else (JupyterHub calls it with the signed-in user, or None)."""

    def for_user(user: Any) -> list[ServerStatus]:
        return platform_status(settings) if getattr(user, "admin", False) else []

    return for_user
