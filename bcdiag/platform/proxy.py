"""The hub-OAuth proxy in front of the clinician app and the MLflow UI.

jhsingle-native-proxy 0.8.3 with the gaps below closed; run as
``python -m bcdiag.platform.proxy`` with jhsingle-native-proxy's own options.

- Its websocket handshake calls tornado's ``check_origin`` itself. Since tornado 6.6 that
  accepts only configured ``trusted_origins``, so every kernel websocket got 403. The
  same-origin test tornado used to make is restored: the browser's ``Sec-Fetch-Site:
  same-origin``, or an ``Origin`` whose host is the request's ``Host``.
- Its HTTP requests need a hub login, its websocket handshakes did not: anyone who knew a
  kernel id could have opened that kernel's channels. Handshakes now need the same login
  (the hub cookie, which JupyterHub allows on websockets by default).

The clinician app's Voilà asks every request for a token (`services.app_token`): this
proxy adds it (``BCDIAG_PROXIED_TOKEN``) to what it forwards, HTTP and websockets, so a
researcher's terminal on the same machine cannot reach the app's port behind its back.

Two more for the MLflow UI:

- Its forwarded request is a tornado ``HTTPRequest``, which by default refuses a DELETE
  with a body ("Body must be None for method DELETE"); the MLflow UI sends its removals
  as DELETE with a JSON body, so every removal failed with INTERNAL_ERROR. The forwarded
  request now allows any method with or without a body, as the client sent it.
- The model registry is read-only behind it: writes `bcdiag.platform.registry_guard`
  refuses get a 403 with MLflow's error shape, which the UI shows. The rule is on every
  instance: the clinician app has no such paths, and a rule that no option can leave off
  cannot be forgotten on the MLflow service.

Its forwarded requests share tornado's ``AsyncHTTPClient``, whose default of 10
requests at a time queues the rest and fails them with HTTP 599 after 20 s. A Voilà page
request lasts until its kernel has run the notebook, so the 11th clinician to open the
app in a burst got an error page instead of the app (benchmarks/hub_load.py, N = 20: 11
of 20). The client now takes `MAX_FORWARDED` requests at a time.

A cosmetic one: its ``oauth_proxy`` is wrapped by tornado's ``authenticated``,
which redirects a visitor who is not signed in and returns None, which the proxy then
awaits; the visitor got the redirect but every such request (and the hub's minutely
service check) logged a TypeError traceback. Not awaiting None stops that.

It starts the server it proxies at the first signed-in request; for the clinician app that
first clinician waited for Voilà to start and preheat its kernels (`start_at_launch`
starts it with the proxy instead).

On SIGTERM it passes the signal on to the proxied server and exits at once; here it
then waits a few seconds for that server (Voilà stopping its kernels), so that stopping
the hub stops the app too.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from jhsingle_native_proxy import main as jhsingle
from jhsingle_native_proxy.proxyhandlers import ProxyHandler, SuperviseAndProxyHandler
from tornado import httpclient, httputil, web
from tornado.ioloop import IOLoop

from bcdiag.platform import mlflow_ui
from bcdiag.platform.registry_guard import REFUSAL, refuses
from bcdiag.platform.services import PROXIED_TOKEN_ENV

MAX_FORWARDED = 256  # requests forwarded at a time (tornado's default: 10)

_forward_websocket = ProxyHandler.ws_get
_request_options = ProxyHandler.proxy_request_options
_core_proxy = SuperviseAndProxyHandler.core_proxy
_filter_headers = ProxyHandler._filter_headers_and_query


def same_origin(handler: Any, origin: str) -> bool:
    """Whether a websocket handshake comes from a page of this same site."""
    headers = handler.request.headers
    if headers.get("Sec-Fetch-Site") == "same-origin":
        return True
    return bool(urlparse(origin).netloc.lower() == headers.get("Host", "").lower())


async def authenticated_ws_get(handler: Any, *args: Any, **kwargs: Any) -> None:
    """Open the websocket only for a signed-in user with the service's access scope."""
    if getattr(handler, "authtype", "oauth") == "oauth" and not handler.get_current_user():
        raise web.HTTPError(403, "sign in through the hub first")
    await _forward_websocket(handler, *args, **kwargs)


async def redirect_or_proxy(handler: Any, port: int, path: str) -> Any:
    """Proxy for a signed-in user; for anyone else tornado has already sent the login redirect."""
    if handler.authtype != "oauth":
        return await handler.core_proxy(port, path)
    pending = handler.oauth_proxy(port, path)  # None once `authenticated` has redirected
    return None if pending is None else await pending


def any_method_options(handler: Any) -> dict[str, Any]:
    """Options of the forwarded request: jhsingle-native-proxy's, and a body on any method."""
    return {**_request_options(handler), "allow_nonstandard_methods": True}


async def guarded_core_proxy(handler: Any, port: int, path: str) -> Any:
    """Forward the request unless it is a registry write the MLflow UI may not make."""
    if refuses(handler.request.method, path):
        handler.set_status(403)
        handler.finish({"error_code": "PERMISSION_DENIED", "message": REFUSAL})
        return None
    return await _core_proxy(handler, port, path)


def headers_with_token(handler: Any, headers: Any, query: Any) -> tuple[Any, Any]:
    """jhsingle-native-proxy's forwarded headers and query, plus the proxied server's own
    token (`bcdiag.platform.services.app_token`) when this proxy has one."""
    headers, query = _filter_headers(handler, headers, query)
    token = os.environ.get(PROXIED_TOKEN_ENV)
    if token:
        headers["Authorization"] = f"token {token}"
    return headers, query


def forward_many() -> None:
    """Let the forwarding HTTP client take `MAX_FORWARDED` requests at a time."""
    httpclient.AsyncHTTPClient.configure(None, max_clients=MAX_FORWARDED)


class _Unsent(httputil.HTTPConnection):
    """The connection of a request made up to reach a handler's methods (nothing is sent)."""

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """Nothing to close: no client is connected."""


def start_at_launch(make_app: Callable[..., web.Application]) -> Callable[..., web.Application]:
    """jhsingle-native-proxy's ``make_app``, and its supervised server started as soon as
    the proxy's loop runs rather than at the first signed-in request.

    The start is jhsingle-native-proxy's own (``ensure_process``, on the handler instance a
    request would get), so a request arriving meanwhile waits for the same process.
    """

    def make_and_start(*args: Any, **kwargs: Any) -> web.Application:
        app = make_app(*args, **kwargs)
        for rule in app.wildcard_router.rules:
            target = rule.target
            if isinstance(target, type) and issubclass(target, SuperviseAndProxyHandler):
                request = httputil.HTTPServerRequest(method="GET", uri="/", connection=_Unsent())
                handler = target(app, request, **(rule.target_kwargs or {}))
                IOLoop.current().add_callback(handler.ensure_process)
        return app

    return make_and_start


def harden() -> None:
    """Install the fixes on jhsingle-native-proxy's handler classes and HTTP client."""
    forward_many()
    ProxyHandler.check_origin = same_origin
    ProxyHandler.ws_get = authenticated_ws_get
    ProxyHandler.proxy_request_options = any_method_options
    SuperviseAndProxyHandler.proxy = redirect_or_proxy
    SuperviseAndProxyHandler.core_proxy = guarded_core_proxy
    ProxyHandler._filter_headers_and_query = headers_with_token
    jhsingle.make_app = start_at_launch(jhsingle.make_app)


def wait_for_children(timeout_s: float = 4.0) -> None:
    """Reap the proxied server if it exits within `timeout_s` (under the hub's 5 s
    term timeout for services)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid == 0:
            time.sleep(0.1)


if __name__ == "__main__":
    harden()
    if os.environ.get("JUPYTERHUB_SERVICE_NAME") == "mlflow":  # bcdiag.platform.hub.MLFLOW_SERVICE
        mlflow_ui.install()
    atexit.register(wait_for_children)
    jhsingle.run()
