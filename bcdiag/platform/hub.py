"""JupyterHub for bcdiag: where its state lives, its groups and roles, and its services.

`hub_config/jupyterhub_config.py` translates these into JupyterHub settings; the
supervisor (`bcdiag run`) starts the hub through `hub_service`.

Who reaches what:

- ``clinicians`` reach only the ``bcdiag-app`` service (Voilà behind a hub-OAuth
  proxy); they get no Jupyter server (the default ``user`` role is cut down to
  reading one's own name, so the server API refuses them), and the hub's server pages
  (``/hub/home``, ``/hub/spawn``, ``/hub/token``) send them to the app
  (`bcdiag.platform.hub_pages`).
- ``researchers`` get a JupyterLab server each and the ``mlflow`` service.
- ``admins`` hold JupyterHub's ``admin`` role (admin panel, every scope) but get no
  Jupyter server of their own (`servers_for_researchers_only`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tornado import web

from bcdiag.platform.secret_files import secret_file
from bcdiag.platform.services import (
    APP_HEALTH_PATH,
    MAX_UPLOAD_BYTES,
    app_service,
    mlflow_service,
    scoring_service,
)
from bcdiag.platform.telemetry import telemetry_off_env
from bcdiag.processes import Service
from bcdiag.settings import Settings

GROUPS = ("clinicians", "researchers", "admins")
APP_SERVICE = "bcdiag-app"
MLFLOW_SERVICE = "mlflow"
SCORING_SERVICE = "bcdiag-scoring"  # the inference service (Ray Serve)
ADMIN_SERVICE = "bcdiag-admin"  # holds the API token `bcdiag users` uses on a live hub
USER_HEADER = "X-CDSDASHBOARDS-JH-USER"  # what jhsingle-native-proxy --forward-user-info sets
ALLOWED_FAILED_LOGINS = 5
REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_CONFIG = REPO_ROOT / "hub_config" / "jupyterhub_config.py"
HUB_TEMPLATES = REPO_ROOT / "hub_config" / "templates"  # error pages, admin panel
PROXY_COMMAND = REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"


def hub_dir(settings: Settings) -> Path:
    """The hub's state folder: its database, cookie secret, proxy pid and API token."""
    return settings.home / "hub"


def hub_db_url(settings: Settings) -> str:
    """The hub's own SQLite database (accounts, groups, tokens), beside bcdiag's."""
    return f"sqlite:///{(hub_dir(settings) / 'jupyterhub.sqlite').resolve()}"


def hub_url(settings: Settings) -> str:
    """The platform's front door."""
    return f"http://127.0.0.1:{settings.port}"


def admin_api_token(settings: Settings) -> str:
    """The API token of the ``bcdiag-admin`` service (manages users and groups)."""
    return secret_file(hub_dir(settings) / "admin-api-token")


def roles() -> list[dict[str, Any]]:
    """JupyterHub roles: the cut-down default ``user`` role and one role per group."""
    return [
        # Every user holds `user`; by default it grants their own server. Here it grants
        # only what OAuth's "identify" needs (own name and groups), so a user's group
        # decides everything else.
        {"name": "user", "scopes": ["read:users:name!user", "read:users:groups!user"]},
        {
            "name": "clinician",
            "description": "The clinician app, nothing else",
            "scopes": [f"access:services!service={APP_SERVICE}"],
            "groups": ["clinicians"],
        },
        {
            "name": "researcher",
            "description": "Own JupyterLab server and the MLflow UI",
            "scopes": ["self", f"access:services!service={MLFLOW_SERVICE}"],
            "groups": ["researchers"],
        },
        {"name": "admin", "groups": ["admins"]},
        {
            "name": ADMIN_SERVICE,
            "description": "Manages accounts and group memberships (bcdiag users); stops "
            "the server of an account it disables",
            "scopes": ["admin:users", "admin:groups", "list:users", "delete:servers"],
            "services": [ADMIN_SERVICE],
        },
    ]


# A researcher's server token: JupyterHub's defaults, and the MLflow service, which the
# server's kernels reach with it (``MLFLOW_TRACKING_TOKEN``, `researcher_spawner`).
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={MLFLOW_SERVICE}",
]


def _escaped(argv: list[str]) -> list[str]:
    """`argv` safe from jhsingle-native-proxy's ``str.format`` of its command."""
    return [arg.replace("{", "{{").replace("}", "}}") for arg in argv]


# Hub credentials the proxy needs and the proxied server must not inherit.
_DROP_ENV = ["env", "-u", "JUPYTERHUB_API_TOKEN", "-u", "JPY_API_TOKEN"]


def _proxy_command(port: int, destport: int, ready_path: str, command: list[str]) -> list[str]:
    """jhsingle-native-proxy on 127.0.0.1:`port`: hub OAuth (the service's access scope),
    then forwards to `command`, which it starts on the first signed-in request and which
    must listen on 127.0.0.1:`destport` (0: a free port, given to `command` as ``{port}``).
    The signed-in user travels as the `USER_HEADER` header; a client's own copy is dropped.
    """
    return [
        sys.executable, "-m", "bcdiag.platform.proxy",
        "--ip", "127.0.0.1", "--port", str(port), "--destport", str(destport),
        "--authtype", "oauth", "--forward-user-info",
        "--ready-check-path", ready_path, "--ready-timeout", "180",
        "--last-activity-interval", "0",
        "--websocket-max-message-size", str(MAX_UPLOAD_BYTES),
        "--", *_DROP_ENV, *command,
    ]  # fmt: skip


SECRET_SETTINGS = {"BCDIAG_ADMIN_PASSWORD"}


def bcdiag_env(extra: dict[str, str]) -> dict[str, str]:
    """The ``BCDIAG_*`` settings of this process, secrets left out, the telemetry
    switches (`bcdiag.platform.telemetry`), plus `extra` (the hub starts services and
    servers with a clean environment)."""
    passed = {
        key: value
        for key, value in os.environ.items()
        if key.startswith("BCDIAG_") and key not in SECRET_SETTINGS
    }
    return {**passed, **telemetry_off_env(), **extra}


def services(settings: Settings) -> list[dict[str, Any]]:
    """Hub-managed services: the inference service, the clinician app and MLflow UI
    proxies, and the admin token.

    The inference service has no route through the proxy (no ``url``): only the app, on
    this machine, asks it for scores. The hub restarts it if it exits.
    """
    scoring = scoring_service(settings)
    app = app_service(settings, base_url=f"/services/{APP_SERVICE}/")
    ui = mlflow_service(settings, port="{port}")  # the port jhsingle-native-proxy picks
    ui_argv = [arg if arg == "{port}" else _escaped([arg])[0] for arg in ui.argv]
    return [
        {
            "name": SCORING_SERVICE,
            "display": False,
            "command": scoring.argv,
            "environment": bcdiag_env(scoring.env),
        },
        {
            "name": APP_SERVICE,
            "display": True,
            "url": f"http://127.0.0.1:{settings.app_proxy_port}",
            "command": _proxy_command(
                settings.app_proxy_port, settings.app_port, APP_HEALTH_PATH, _escaped(app.argv)
            ),
            "environment": bcdiag_env(app.env),
            "oauth_no_confirm": True,
        },
        {
            "name": MLFLOW_SERVICE,
            "display": True,
            "url": f"http://127.0.0.1:{settings.mlflow_proxy_port}",
            "command": _proxy_command(settings.mlflow_proxy_port, 0, "/health", ui_argv),
            "environment": bcdiag_env(ui.env),
            "oauth_no_confirm": True,
        },
        {"name": ADMIN_SERVICE, "api_token": admin_api_token(settings)},
    ]


def _groups(user: Any) -> set[str]:
    return {group.name for group in getattr(user, "groups", [])}


def app_path(user: Any) -> str:
    """The clinician app's path below the site's base URL if `user` is a clinician, else
    "" (the error pages' way back, as the template variable ``bcdiag_app``)."""
    return f"services/{APP_SERVICE}/" if "clinicians" in _groups(user) else ""


def default_url(handler: Any) -> str:
    """Where a signed-in user lands: clinicians in the app, admins in the admin panel,
    researchers (empty answer) in their own server, JupyterHub's default."""
    user = handler.current_user
    if app_path(user):
        return f"{handler.base_url}{app_path(user)}"
    if "admins" in _groups(user):
        return f"{handler.base_url}hub/admin"
    return ""


def servers_for_researchers_only(spawner: Any) -> None:
    """``Spawner.pre_spawn_hook``: only researchers get a Jupyter server, even when an admin
    presses "Start Server" for someone else. Clinicians use the app; admins manage
    accounts, and a server of theirs would run with the hub's own rights."""
    if "researchers" not in _groups(spawner.user):
        role = "a clinician" if "clinicians" in _groups(spawner.user) else "not a researcher"
        raise web.HTTPError(  # 403 with this sentence, not an unhandled 500
            403,
            f"{spawner.user.name} is {role}: only researchers get a Jupyter server "
            "(clinicians use the app, admins the admin panel and `bcdiag users`)",
        )


def hub_service(settings: Settings) -> Service:
    """The hub process as `bcdiag run` supervises it (it starts the proxy and services)."""
    hub_dir(settings).mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)]
    url = hub_url(settings)
    # started once the inference service it runs answers too: the first upload is scored
    scoring = scoring_service(settings).health_url
    return Service("hub", argv, f"{url}/hub/health", f"{url}/", hub_env(settings), (scoring,))


HUB_SETTINGS = (
    "home", "notebooks_dir", "port", "hub_api_port", "proxy_api_port", "app_port",
    "app_proxy_port", "mlflow_port", "mlflow_proxy_port", "scoring_port", "session_hours",
    "idle_minutes", "lockout_seconds", "app_pool_size", "app_max_kernels",
)  # fmt: skip


def hub_env(settings: Settings) -> dict[str, str]:
    """The settings the hub's config reads, as ``BCDIAG_*`` variables for its process."""
    env = {f"BCDIAG_{name.upper()}": str(getattr(settings, name)) for name in HUB_SETTINGS}
    env["BCDIAG_HOME"] = str(settings.home.resolve())
    env["BCDIAG_MLFLOW_TRACKING_URI"] = settings.resolved_tracking_uri
    return env
