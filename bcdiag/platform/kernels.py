"""A kernel manager for the clinician app: a cap on live kernels, and a closed page's
kernel ended within a minute.

Voilà starts one kernel per open page and jupyter_server has no limit of its
own, so a burst of pages could exhaust memory. Selected with
``--VoilaConfiguration.multi_kernel_manager_class``; Voilà's preheating pool
subclasses it, so pooled kernels count towards the cap and are never culled.

Voilà's page asks for its kernel's shutdown when it closes, but that request needs
an XSRF cookie Voilà's page never sets, so it is refused (and a crashed browser
sends nothing). Culling covers both: a kernel whose page connected and then went away is
shut down after `closed_page_timeout` idle seconds; one whose page is open is shut down
after jupyter_server's ``cull_idle_timeout`` of inactivity, as before.

A page whose kernel came from the preheated pool has not connected yet while the browser
loads the app's scripts, and that kernel's last activity may be long past (it waited in
the pool): under load (20 clinicians signing in at once on 2 cores) pages took over 30 s
to connect, and their kernels were shut down under them. A kernel no page has connected
to yet is given `unopened_page_timeout` instead (a browser that never connects).

Kernel starts are spaced by `start_spacing`: a kernel's first seconds (Python, the app's
imports, the scan reader's worker) take about 2 s of a core, and Voilà refills its whole
pool at once, so a burst of 20 pages set 20 kernels starting on 2 cores against the
pages being opened.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Float, Integer


class CappedKernelManager(AsyncMappingKernelManager):  # type: ignore[misc]
    """`AsyncMappingKernelManager` with `max_kernels` and `closed_page_timeout`."""

    max_kernels = Integer(
        0,
        config=True,
        help="Most live kernels; a page asking for one more gets HTTP 503. 0: no cap.",
    )
    closed_page_timeout = Integer(
        30,
        config=True,
        help="Seconds a kernel with no page connected may stay idle before it is shut "
        "down (checked every cull_interval; needs cull_idle_timeout > 0 to run at all).",
    )
    unopened_page_timeout = Integer(
        300,
        config=True,
        help="Seconds a kernel handed to a page may wait for that page to connect before it "
        "is shut down (the browser went away before the app loaded).",
    )

    start_spacing = Float(
        1.5,
        config=True,
        help="Seconds from one kernel start to the next (a kernel's start takes about 2 s of "
        "a core); 0: start them all at once.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self._paged: set[str] = set()  # kernels a page has connected to
        self._start_turn = asyncio.Lock()
        self._next_start = 0.0  # event-loop time before which no kernel starts

    def notify_connect(self, kernel_id: str) -> None:
        """Count a page's connection, and remember that this kernel's page has opened."""
        self._paged.add(kernel_id)
        super().notify_connect(kernel_id)  # type: ignore[no-untyped-call]

    async def start_kernel(  # type: ignore[override]
        self, *, kernel_id: str | None = None, **kwargs: Any
    ) -> str:
        """Start a kernel unless `max_kernels` are alive (reusing `kernel_id` is allowed),
        `start_spacing` seconds after the previous start at the earliest."""
        async with self._start_turn:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(max(0.0, self._next_start - loop.time()))
            if kernel_id is None and 0 < self.max_kernels <= len(self.list_kernel_ids()):
                raise web.HTTPError(
                    503, f"all {self.max_kernels} app sessions are in use; try again in a minute"
                )
            self._next_start = loop.time() + self.start_spacing
        kernel: str = await super().start_kernel(kernel_id=kernel_id, **kwargs)
        return kernel

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        """Shut a kernel down once its page is gone; else jupyter_server's idle rule."""
        self._paged &= set(self._kernels)  # forget kernels shut down since
        kernel = self._kernels[kernel_id]
        last_activity = getattr(kernel, "last_activity", None)
        connected = bool(self._kernel_connections.get(kernel_id, 0))
        # Busy: still running the notebook (a page is being prepared, or preheating).
        idle_state = getattr(kernel, "execution_state", None) != "busy"
        if not connected and idle_state and last_activity is not None:
            opened = kernel_id in self._paged
            limit = self.closed_page_timeout if opened else self.unopened_page_timeout
            idle = datetime.now(UTC) - last_activity
            if idle > timedelta(seconds=limit):
                self.log.info("Shutting down kernel %s: its page %s %d s ago", kernel_id,
                              "closed" if opened else "never connected",
                              idle.total_seconds())  # fmt: skip
                await self.shutdown_kernel(kernel_id)  # type: ignore[no-untyped-call]
                return
        await super().cull_kernel_if_idle(kernel_id)  # type: ignore[no-untyped-call]
