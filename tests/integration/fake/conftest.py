"""Fixtures for the fake API's tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from flux_provider.testing import FakeFluxServer
from tests.support.fake import KEY, WAIT, CallbackSink, FakeClock, keyed_client, start_sink


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[FakeFluxServer]:
    with FakeFluxServer(api_key=KEY, duration=3.0, clock=clock) as fake:
        yield fake


@pytest.fixture
def client(server: FakeFluxServer) -> Iterator[httpx.Client]:
    with keyed_client(server.base_url) as http:
        yield http


@pytest.fixture
def sink() -> Iterator[CallbackSink]:
    found, listener, thread = start_sink()
    yield found
    listener.shutdown()
    listener.server_close()
    thread.join(WAIT)
