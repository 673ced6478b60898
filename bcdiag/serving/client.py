"""The inference service's client, as the clinician app and `bcdiag predict` use it.

Torch-free: the app kernel sends the uploaded file as it came and gets back a
`ScanResult`. A service that does not answer within ``scoring_timeout_s`` (or fails)
raises `ServiceUnavailable` with a sentence for the clinician; the next call tries
again, so a service that comes back serves the next upload.
"""

from __future__ import annotations

import os
from typing import Any

import requests

from bcdiag.serving.results import (
    ModelRef,
    ScanResult,
    ServiceUnavailable,
    Upload,
    error_from_json,
)
from bcdiag.settings import Settings, get_settings

UNAVAILABLE = "the analysis service is unavailable"
SCORE_PATH = "/score"
HEALTH_PATH = "/health"
SCORING_TOKEN_ENV = "BCDIAG_SCORING_TOKEN"
REFUSED = 422  # the service's status for an upload it could not score, with code and message


def service_token() -> str | None:
    """The bearer token between the app and the service: `SCORING_TOKEN_ENV`, which the
    platform gives both (from a 0600 file of the hub's state that researchers' accounts,
    on the same machine, cannot read); None when it is not set."""
    return os.environ.get(SCORING_TOKEN_ENV) or None


class ServiceClient:
    """A `bcdiag.serving.results.Scorer` that asks the inference service.

    Args:
        url: the service's address (``http://127.0.0.1:<scoring_port>``).
        token: the bearer token the service asks for (`service_token`); without one every
            upload is answered `ServiceUnavailable`, saying so.
        timeout_s: seconds to wait for a connection and, again, for the answer.
    """

    def __init__(self, url: str, token: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._token = token
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ServiceClient:
        """The client of the service `make run` starts, as the settings describe it."""
        settings = settings or get_settings()
        return cls(settings.resolved_scoring_url, service_token(), settings.scoring_timeout_s)

    def score(self, upload: Upload) -> ScanResult:
        """The upload's result (see `Scorer.score`)."""
        if self._token is None:
            raise ServiceUnavailable(
                f"{UNAVAILABLE}: this app was started without its token ({SCORING_TOKEN_ENV}); "
                "start the platform with `bcdiag run`"
            )
        params = {"filename": upload.filename}
        if upload.modality is not None:
            params["modality"] = upload.modality
        response = self._request("post", SCORE_PATH, params=params, data=upload.data)
        body = _json(response)
        if response.status_code == REFUSED:
            if "code" not in body:  # FastAPI's own 422: the request was malformed
                raise ServiceUnavailable(f"{UNAVAILABLE}: it could not read the request")
            raise error_from_json(body)
        return ScanResult.from_json(body)

    def ready(self) -> list[ModelRef]:
        """The models the service holds; none when it does not answer."""
        try:
            body = _json(self._request("get", HEALTH_PATH))
        except ServiceUnavailable:
            return []
        return [ModelRef.from_json(model) for model in body.get("models", [])]

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self._session.request(
                method, self.url + path, timeout=(self._timeout_s, self._timeout_s), **kwargs
            )
        except requests.Timeout as error:
            raise ServiceUnavailable(
                f"{UNAVAILABLE}: it did not answer within {self._timeout_s:g} s"
            ) from error
        except requests.RequestException as error:
            raise ServiceUnavailable(f"{UNAVAILABLE}: it cannot be reached") from error
        if response.status_code not in (200, REFUSED):
            raise ServiceUnavailable(f"{UNAVAILABLE}: it answered HTTP {response.status_code}")
        return response


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as error:
        raise ServiceUnavailable(f"{UNAVAILABLE}: its answer was not readable") from error
    if not isinstance(body, dict):
        raise ServiceUnavailable(f"{UNAVAILABLE}: its answer was not readable")
    return body
