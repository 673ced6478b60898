"""The hub-OAuth proxy forwards a burst of page requests at once (bcdiag/platform/proxy.py):
tornado's default of 10 queued the 11th clinician's page and failed it after 20 s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tornado import httpclient

from bcdiag.platform import proxy


@pytest.fixture
def restored_client_configuration() -> Iterator[None]:
    saved = httpclient.AsyncHTTPClient._save_configuration()
    try:
        yield
    finally:
        httpclient.AsyncHTTPClient._restore_configuration(saved)


@pytest.mark.usefixtures("restored_client_configuration")
def test_the_proxy_forwards_more_than_tornados_default_of_ten_at_once() -> None:
    assert httpclient.AsyncHTTPClient(force_instance=True).max_clients == 10  # the default
    proxy.forward_many()  # as `harden` does at the proxy's start
    client = httpclient.AsyncHTTPClient(force_instance=True)
    assert client.max_clients == proxy.MAX_FORWARDED >= 100
    client.close()
