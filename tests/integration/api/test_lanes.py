"""``LaneTransport``: a bounded set of one-connection lanes behind one httpx client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from flux_provider.api.config import shared_ssl_context
from flux_provider.api.lanes import LaneTransport
from flux_provider.testing import FakeFluxServer, Fault

KEY = "sk-lanes-SECRET-9876"


@pytest.fixture
def fake() -> Iterator[FakeFluxServer]:
    with FakeFluxServer(api_key=KEY, duration=60) as server:
        yield server


def _client(fake: FakeFluxServer, lanes: int, **options: object) -> httpx.AsyncClient:
    transport = LaneTransport(lanes, ssl_context=shared_ssl_context(), keepalive_expiry=30.0)
    return httpx.AsyncClient(
        base_url=fake.base_url,
        headers={"x-api-key": KEY},
        transport=transport,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def client(fake: FakeFluxServer) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(fake, 2) as client:
        yield client


def _ports(fake: FakeFluxServer) -> set[int]:
    return {request.client_port for request in fake.stats.requests}


async def _balance(client: httpx.AsyncClient) -> int:
    return (await client.get("/api/v1/client/account/balance")).status_code


async def test_requests_beyond_the_lanes_wait_their_turn(
    fake: FakeFluxServer, client: httpx.AsyncClient
) -> None:
    for _ in range(4):
        fake.add_fault(Fault(endpoint="balance", delay=0.2))
    assert await asyncio.gather(*(_balance(client) for _ in range(8))) == [200] * 8
    assert len(_ports(fake)) == 2
    assert repr(client._transport) == "LaneTransport(lanes=2/2)"


async def test_a_light_load_keeps_one_connection(
    fake: FakeFluxServer, client: httpx.AsyncClient
) -> None:
    for _ in range(10):
        assert await _balance(client) == 200
    assert len(_ports(fake)) == 1


async def test_a_wait_longer_than_the_pool_timeout_is_a_pool_timeout(fake: FakeFluxServer) -> None:
    fake.add_fault(Fault(endpoint="balance", delay=2.0))
    async with _client(fake, 1, timeout=httpx.Timeout(10.0, pool=0.2)) as client:
        held = asyncio.create_task(_balance(client))
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.PoolTimeout):
            await _balance(client)
        assert await held == 200
        assert await _balance(client) == 200


async def test_a_cancelled_wait_gives_its_turn_to_the_next(fake: FakeFluxServer) -> None:
    fake.add_fault(Fault(endpoint="balance", delay=0.5))
    async with _client(fake, 1) as client:
        held = asyncio.create_task(_balance(client))
        await asyncio.sleep(0.1)
        gave_up = asyncio.create_task(_balance(client))
        waiting = asyncio.create_task(_balance(client))
        await asyncio.sleep(0.1)
        gave_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        assert [await held, await waiting] == [200, 200]


async def test_a_request_cancelled_in_flight_frees_its_lane(fake: FakeFluxServer) -> None:
    fake.add_fault(Fault(endpoint="balance", delay=1.0))
    async with _client(fake, 1) as client:
        stuck = asyncio.create_task(_balance(client))
        await asyncio.sleep(0.2)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        assert await _balance(client) == 200
        # The cancelled request's connection was dropped; the lane opened a new one.
        assert len(_ports(fake)) == 2


async def test_a_dropped_connection_is_an_httpx_error_and_the_lane_reconnects(
    fake: FakeFluxServer, client: httpx.AsyncClient
) -> None:
    assert await _balance(client) == 200
    fake.add_fault(Fault(endpoint="balance", drop=True))
    with pytest.raises(httpx.RemoteProtocolError):
        await _balance(client)
    assert await _balance(client) == 200
    assert len(_ports(fake)) == 2


async def test_closing_closes_every_lane(fake: FakeFluxServer) -> None:
    client = _client(fake, 3)
    fake.add_fault(Fault(endpoint="balance", delay=0.2))
    fake.add_fault(Fault(endpoint="balance", delay=0.2))
    assert await asyncio.gather(*(_balance(client) for _ in range(3))) == [200] * 3
    await client.aclose()
    assert repr(client._transport) == "LaneTransport(lanes=0/3)"


def test_at_least_one_lane() -> None:
    with pytest.raises(ValueError, match="max_lanes"):
        LaneTransport(0, ssl_context=shared_ssl_context(), keepalive_expiry=30.0)
