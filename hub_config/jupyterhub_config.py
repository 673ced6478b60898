"""JupyterHub configuration for bcdiag on one machine (`bcdiag run` starts it).

A thin translation of `bcdiag.settings` (``BCDIAG_*`` variables) and `bcdiag.platform.hub`
(groups, roles, services) into JupyterHub settings. Secrets live under
``$BCDIAG_HOME/hub`` (cookie secret, admin API token), never here. Kubernetes:
see ``k8s/``; production authentication, TLS and PostgreSQL: see ``README.md``.
"""

# ruff: noqa: F821  (`c` is injected by JupyterHub's config loader)

from __future__ import annotations

import sys
from pathlib import Path

from bcdiag.platform import hub, passwords, researchers, status
from bcdiag.settings import get_settings

settings = get_settings()
state = hub.hub_dir(settings)
state.mkdir(parents=True, exist_ok=True)
minutes_idle = settings.idle_minutes * 60

# --- front door: hub and proxy on 127.0.0.1 only ---------------------------------------
c.JupyterHub.bind_url = hub.hub_url(settings)
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings.hub_api_port}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [str(hub.PROXY_COMMAND)]  # installed by `npm ci`
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.db_url = hub.hub_db_url(settings)
c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")  # created 0600 on first start
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
# A login lasts one working session; JupyterHub has no idle logout of its own, so the
# cookie's age bounds it, and idle kernels and servers are shut down below.
c.JupyterHub.cookie_max_age_days = settings.session_hours / 24

# --- accounts: NativeAuthenticator (bcdiag's subclass), admins create every account -------
c.JupyterHub.authenticator_class = "bcdiag.platform.authenticator.BcdiagAuthenticator"
c.NativeAuthenticator.enable_signup = False  # /hub/signup answers 404
c.NativeAuthenticator.open_signup = False
# Its own checks on its change-password pages; bcdiag's rules (bcdiag/platform/passwords.py)
# come first there and in `bcdiag users`.
c.NativeAuthenticator.minimum_password_length = passwords.MIN_LENGTH
c.NativeAuthenticator.check_common_password = True
c.NativeAuthenticator.allowed_failed_logins = hub.ALLOWED_FAILED_LOGINS
c.NativeAuthenticator.seconds_before_next_try = settings.lockout_seconds
# Only accounts an admin created and approved can sign in; that table is the allow list.
c.Authenticator.allow_all = True
# A disabled account's hub sessions end within this many seconds (its app page once the
# app proxy's own cache of the hub's answer, 5 minutes, runs out).
c.Authenticator.auth_refresh_age = 60

# --- pages: plain-language errors, the admin panel without "Add Users" -----------------
c.JupyterHub.template_paths = [str(hub.HUB_TEMPLATES)]
c.JupyterHub.template_vars = {
    "bcdiag_app": hub.app_path,
    "bcdiag_status": status.admin_status(settings),  # the admin panel's list of servers
}

# --- who reaches what (see bcdiag/platform/hub.py) ----------------------------------------------
c.JupyterHub.load_groups = {group: {"users": []} for group in hub.GROUPS}
c.JupyterHub.load_roles = hub.roles()
c.JupyterHub.services = hub.services(settings)
c.JupyterHub.default_url = hub.default_url

# --- researchers' JupyterLab: one process per researcher, as their own OS account -------
# bcdiag/platform/researchers.py: what a researcher's server can and cannot reach.
c.JupyterHub.spawner_class = "bcdiag.platform.researcher_spawner.ResearcherSpawner"
c.ResearcherSpawner.mlflow_url = f"{hub.hub_url(settings)}/services/{hub.MLFLOW_SERVICE}/"
c.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
c.Spawner.default_url = "/lab"
c.Spawner.environment = researchers.researcher_environment()
c.Spawner.server_token_scopes = hub.SERVER_TOKEN_SCOPES  # also the kernels' MLflow token
c.Spawner.args = [
    f"--ServerApp.shutdown_no_activity_timeout={minutes_idle}",
    f"--MappingKernelManager.cull_idle_timeout={minutes_idle}",
    "--MappingKernelManager.cull_interval=60",
    "--MappingKernelManager.default_kernel_name=bcdiag",  # "Python (bcdiag)", the only one
    "--KernelSpecManager.allowed_kernelspecs=bcdiag",
]
c.Spawner.pre_spawn_hook = hub.servers_for_researchers_only  # also when an admin asks
c.Spawner.start_timeout = 120  # a loaded 2-core machine needs 30-60 s
c.Spawner.http_timeout = 120
