"""A kernel manager for the clinician app that refuses kernels past a cap.

Voilà starts one kernel per open page and jupyter_server has no limit of its
own, so a burst of pages could exhaust memory. Selected with
``--VoilaConfiguration.multi_kernel_manager_class``; Voilà's preheating pool
subclasses it, so pooled kernels count towards the cap.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer


class CappedKernelManager(AsyncMappingKernelManager):  # type: ignore[misc]
    """`AsyncMappingKernelManager` with `max_kernels`."""

    max_kernels = Integer(
        0,
        config=True,
        help="Most live kernels; a page asking for one more gets HTTP 503. 0: no cap.",
    )

    async def start_kernel(  # type: ignore[override]
        self, *, kernel_id: str | None = None, **kwargs: Any
    ) -> str:
        """Start a kernel unless `max_kernels` are alive (reusing `kernel_id` is allowed)."""
        if kernel_id is None and 0 < self.max_kernels <= len(self.list_kernel_ids()):
            raise web.HTTPError(
                503, f"all {self.max_kernels} app sessions are in use; try again in a minute"
            )
        kernel: str = await super().start_kernel(kernel_id=kernel_id, **kwargs)
        return kernel
