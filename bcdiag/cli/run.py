"""``bcdiag run``: bring the platform up on its embedded defaults."""

from __future__ import annotations

import sys

import click

from bcdiag.platform.hub import hub_url
from bcdiag.platform.researchers import private_state
from bcdiag.platform.services import check_app_kernels
from bcdiag.platform.startup import platform_ports, platform_services, process_record
from bcdiag.platform.users import FirstAdmin, ensure_first_admin
from bcdiag.processes import reclaim, supervise
from bcdiag.settings import get_settings
from bcdiag.storage.database import upgrade


def _welcome(url: str, admin: FirstAdmin | None) -> str:
    lines = [f"Sign in at {url}/"]
    if admin is not None:
        shown = admin.password or "(BCDIAG_ADMIN_PASSWORD)"
        lines.append(f"first admin: {admin.name}  password: {shown}")
        if admin.password:
            lines.append("The password is shown this once; add accounts with `bcdiag users add`.")
    return "\n".join(lines)


@click.command()
def run() -> None:
    """Migrate; create the first admin once; start MLflow, the app and JupyterHub (Ctrl-C stops)."""
    settings = get_settings()
    check_app_kernels(settings)  # before anything starts: the hub would fail on it later
    private_state(settings.home)  # hub secrets, clinical data: no other account reads them
    # Before the first admin is created: its password is shown only once the platform runs.
    reclaim(process_record(settings), platform_ports(settings))
    upgrade(settings.resolved_database_url)
    admin = ensure_first_admin(settings)
    services = platform_services(settings)
    welcome = _welcome(hub_url(settings), admin)
    # 180 s: the hub counts as started once its inference service (a Ray cluster) answers
    sys.exit(supervise(services, 180, welcome=welcome, record=process_record(settings)))
