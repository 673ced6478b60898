"""The spawner of researchers' JupyterLab servers: each as the researcher's own OS
account (`bcdiag.platform.researchers`), in its home, with the notebooks copied in."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode

from bcdiag.platform.researchers import (
    OsAccount,
    ResearcherAccountError,
    as_account,
    copy_notebooks_as,
    find_os_account,
    require_root,
)
from bcdiag.settings import get_settings


class ResearcherSpawner(LocalProcessSpawner):  # type: ignore[misc]
    """`LocalProcessSpawner` with bcdiag's account names: hub user ``rob`` runs as OS
    user ``bcdiag-rob`` (created by ``bcdiag users add``), never as the hub's account."""

    mlflow_url = Unicode(
        help="MLflow as researchers' kernels reach it: the hub's MLflow service, whose "
        "proxy keeps the registry read-only; the server's hub token authenticates them."
    ).tag(config=True)

    def account(self) -> OsAccount:
        """This user's OS account; an error the spawn page shows if there is none."""
        require_root()
        found = find_os_account(self.user.name)
        if found is None:
            raise ResearcherAccountError(
                f"{self.user.name} has no researcher OS account: an admin creates it with "
                f"`bcdiag users add {self.user.name} --group researchers`"
            )
        return found

    def make_preexec_fn(self, name: str) -> Any:
        """Become the researcher's OS account (not the OS user called `name`)."""
        return as_account(self.account())

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        """USER, HOME and SHELL of the researcher's OS account; bcdiag's state for this
        server in its home; MLflow through the hub with the server's own token."""
        account = self.account()
        env.update(
            USER=account.name,
            HOME=str(account.home),
            SHELL="/bin/bash",
            BCDIAG_HOME=str(account.home / ".bcdiag"),
            MLFLOW_TRACKING_URI=self.mlflow_url,
            MLFLOW_TRACKING_TOKEN=self.api_token,
        )
        return env

    async def start(self) -> Any:
        """Copy missing notebooks into the home (as the researcher), then start there."""
        account = self.account()
        await asyncio.to_thread(copy_notebooks_as, account, get_settings().notebooks_dir)
        self.notebook_dir = str(account.home)
        return await super().start()
