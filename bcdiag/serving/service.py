"""The inference service: one Ray Serve application that holds each modality's champion,
loaded once, and scores every upload of the clinician app.

- ``POST /score?filename=NAME[&modality=MG|US]`` with the file as the body: 200 and a
  `ScanResult` as JSON, or 422 and ``code`` / ``message`` when the file is not a usable
  scan or no model can score it (`bcdiag.serving.results.error_json`).
- ``GET /health``: ``status`` and the champions a replica holds, without asking the
  registry; 200 only once a replica is up, so it is what `make run` waits for. A replica
  looks for new champions every ``champion_check_s`` and loads one as soon as it is
  promoted, without a restart.

Scoring asks for the bearer token `bcdiag.serving.client.service_token`: the port is on
127.0.0.1, where researchers' own accounts also run; health names models, nothing more.
Requests arriving within 10 ms of each other are scored as one batch per replica
(``@serve.batch``), in a worker thread, so health checks are answered meanwhile. Ray's
own control plane asks for the same token: the platform starts this process with
``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (Ray reads them when it is imported).

``python -m bcdiag.serving.service`` starts a private single-machine Ray cluster and the
application; the hub runs it as its managed service ``bcdiag-scoring``. On Kubernetes,
KubeRay's RayService runs the same application (``hub_config/k8s/``).
"""

import asyncio
import hmac
import json
import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import ray
from fastapi import FastAPI, Request, Response
from ray import serve

from bcdiag.errors import BcdiagError, ConfigurationError
from bcdiag.serving.client import (
    HEALTH_PATH,
    REFUSED,
    SCORE_PATH,
    SCORING_TOKEN_ENV,
    service_token,
)
from bcdiag.serving.results import ScanResult, Upload, error_json
from bcdiag.settings import Settings, get_settings

APPLICATION = "bcdiag"
REFRESH_S = 5.0  # how often a replica looks for new champions when champion_check_s is 0
BATCH_WAIT_S = 0.01
OBJECT_STORE_BYTES = 128 * 2**20  # requests travel over HTTP; Ray's store holds little
TEMP_PREFIX = "bcdiag-ray-"  # Ray's session files; removed when the service stops

log = logging.getLogger(__name__)
api = FastAPI(title="bcdiag inference service", docs_url=None, redoc_url=None)


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    # json.dumps, not FastAPI's encoder: an operating point may be NaN (never validated)
    return Response(json.dumps(body), status_code=status, media_type="application/json")


@serve.deployment(name="scorer", ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Scorer:
    """One replica: a `LocalScorer` (torch, the champions) behind the HTTP routes."""

    def __init__(self, token: str, max_batch: int) -> None:
        from bcdiag.serving.local import LocalScorer  # torch: in the replica only

        self._token = token
        self._scorer = LocalScorer()
        self._scorer.ready()  # what has no champion yet (or no registry) loads later
        self._score_batch.set_max_batch_size(max_batch)  # type: ignore[attr-defined]  # @serve.batch's
        threading.Thread(target=self._keep_champions, name="champions", daemon=True).start()

    def _keep_champions(self) -> None:
        """Load a newly promoted champion as soon as it is seen, not with the first upload
        after it (loading one takes seconds)."""
        while True:
            time.sleep(get_settings().champion_check_s or REFRESH_S)
            try:
                self._scorer.predictor.refresh()
            except BcdiagError as error:  # e.g. the audit trail is down: uploads say so
                log.warning("champion refresh failed: %s", error)

    def _allowed(self, request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode())

    @api.get(HEALTH_PATH)
    async def health(self) -> Response:
        models = self._scorer.predictor.loaded()
        return _answer({"status": "ok", "models": [model.as_json() for model in models]})

    @api.post(SCORE_PATH)
    async def score(self, request: Request, filename: str, modality: str | None = None) -> Response:
        if not self._allowed(request):
            return _answer({"message": "a bearer token is required"}, 401)
        result = await self._score_batch(Upload(await request.body(), filename, modality))
        if isinstance(result, BcdiagError):
            return _answer(error_json(result), REFUSED)
        return _answer(result.as_json())

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _score_batch(self, uploads: list[Upload]) -> list[ScanResult | BcdiagError]:
        return await asyncio.to_thread(self._scorer.score_many, uploads)


def application(settings: Settings) -> Any:
    """The Serve application: `Scorer` with the settings' replicas and batch size.

    Raises:
        ConfigurationError: there is no token to ask of callers.
    """
    token = service_token()
    if token is None:
        raise ConfigurationError(
            f"{SCORING_TOKEN_ENV} is not set: the inference service will not serve without "
            "a token; start it with `bcdiag run`"
        )
    # Serve's default of 5 requests in a replica at once would cap every batch at 5
    return Scorer.options(  # type: ignore[attr-defined]  # @serve.deployment made it a Deployment
        num_replicas=settings.scoring_replicas,
        max_ongoing_requests=2 * settings.scoring_max_batch,
    ).bind(token, settings.scoring_max_batch)


def build(args: dict[str, str]) -> Any:
    """The application as KubeRay's RayService imports it (``import_path:
    bcdiag.serving.service:build``), from the pod's ``BCDIAG_*`` settings; replicas and
    autoscaling come from the RayService's own deployment options. `args` is unused."""
    return application(get_settings())


def start(settings: Settings, stopping: threading.Event) -> Callable[[], None]:
    """Start a private Ray cluster and the application on 127.0.0.1:`scoring_port`; return
    once it serves, with the function that stops both.

    From the moment Ray runs, SIGTERM, SIGINT and SIGHUP set `stopping`: ray.init installs
    a SIGTERM handler of its own that would exit without stopping, and the health URL
    answers before `serve.run` returns, so a caller may already be asking it to stop.
    """
    # Ray's sockets live under its temp dir, whose path must stay short (107 bytes).
    temp = tempfile.mkdtemp(prefix=TEMP_PREFIX)

    def stop() -> None:
        if ray.is_initialized():
            serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)

    try:
        ray.init(
            address="local",  # never join a cluster someone else started on this machine
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            namespace=APPLICATION,
            _temp_dir=temp,
        )
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: stopping.set())
        serve.start(http_options={"host": "127.0.0.1", "port": settings.scoring_port})
        serve.run(application(settings), name=APPLICATION, route_prefix="/")
    except BaseException:  # ray.init's own SIGTERM handler exits with SystemExit
        stop()
        raise
    return stop


def main() -> None:
    """``python -m bcdiag.serving.service``: serve until SIGTERM, SIGINT or SIGHUP."""
    settings = get_settings()
    stopping = threading.Event()
    stop = start(settings, stopping)
    print(f"inference service: {settings.resolved_scoring_url}", flush=True)
    stopping.wait()
    stop()


if __name__ == "__main__":
    main()
