"""``ClientRegistry``: one reference-counted client per configuration and event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from flux_provider.api.client import AsyncFluxClient
from flux_provider.api.config import MAX_CONNECTIONS, ClientConfig
from flux_provider.api.pool import ClientRegistry, shared_clients
from flux_provider.testing import FakeFluxServer, Fault

KEY = "sk-pool-SECRET-1234"
PROMPT = {"prompt": "a lighthouse at dusk"}


@pytest.fixture
def fake() -> Iterator[FakeFluxServer]:
    with FakeFluxServer(api_key=KEY, duration=0.2) as server:
        yield server


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _config(fake: FakeFluxServer, **changes: object) -> ClientConfig:
    return ClientConfig(**{"api_key": KEY, "base_url": fake.base_url, **changes})  # type: ignore[arg-type]


async def test_concurrent_first_leases_build_one_client(fake: FakeFluxServer) -> None:
    registry = ClientRegistry()
    config = _config(fake)
    seen: list[AsyncFluxClient] = []
    leases_when_all_in: list[int] = []
    all_in = asyncio.Event()

    async def use() -> None:
        async with registry.lease(config) as client:
            seen.append(client)
            if len(seen) == 200:
                leases_when_all_in.append(registry.lease_count(config))
                all_in.set()
            await all_in.wait()

    await asyncio.gather(*(use() for _ in range(200)))
    assert leases_when_all_in == [200]
    assert registry.built == 1
    assert len({id(client) for client in seen}) == 1
    assert seen[0].is_closed
    assert registry.client_count() == 0


async def test_requests_of_many_leases_share_the_bounded_pool(fake: FakeFluxServer) -> None:
    registry = ClientRegistry()
    config = _config(fake)
    task_ids = [fake.submit(PROMPT) for _ in range(200)]

    async def poll(task_id: str) -> str:
        async with registry.lease(config) as client:
            return (await client.get_task(task_id)).flux_task_id

    assert await asyncio.gather(*(poll(task_id) for task_id in task_ids)) == task_ids
    ports = {request.client_port for request in fake.stats.requests}
    assert 1 <= len(ports) <= MAX_CONNECTIONS
    assert registry.built == 1


async def test_a_changed_configuration_gets_its_own_client(fake: FakeFluxServer) -> None:
    registry = ClientRegistry()
    old, rotated = _config(fake), _config(fake, api_key="sk-pool-ROTATED-5678")
    async with registry.lease(old) as first:
        async with registry.lease(rotated) as second:
            assert second is not first
            for changed in (
                _config(fake, info_path="/v2/TaskInfo"),
                _config(fake, auth_header="Authorization"),
                _config(fake, timeout=5.0),
            ):
                async with registry.lease(changed) as other:
                    assert other is not first
                    assert other is not second
            async with registry.lease(_config(fake)) as same:
                assert same is first
            assert registry.client_count() == 2
        assert second.is_closed
        assert not first.is_closed
        await first.get_balance()
    assert first.is_closed
    assert registry.built == 5


async def test_the_last_lease_closes_and_the_next_builds_anew(fake: FakeFluxServer) -> None:
    registry = ClientRegistry()
    config = _config(fake)
    async with registry.lease(config) as first:
        async with registry.lease(config) as again:
            assert again is first
        assert not first.is_closed
    assert first.is_closed
    assert registry.client_count() == 0
    async with registry.lease(config) as second:
        assert second is not first
        await second.get_balance()


async def test_a_closed_client_is_never_handed_out(fake: FakeFluxServer) -> None:
    registry = ClientRegistry()
    config = _config(fake)
    async with registry.lease(config) as first:
        await first.aclose()
        async with registry.lease(config) as second:
            assert second is not first
            await second.get_balance()


async def test_a_lease_cancelled_mid_request_leaves_the_client_to_the_others(
    fake: FakeFluxServer,
) -> None:
    registry = ClientRegistry()
    config = _config(fake)
    stuck_task = fake.submit(PROMPT)
    fake.add_fault(Fault(endpoint="poll", delay=3.0))
    in_flight = asyncio.Event()
    leased: list[AsyncFluxClient] = []

    async def stuck() -> None:
        async with registry.lease(config) as client:
            leased.append(client)
            in_flight.set()
            await client.get_task(stuck_task, retry=False)

    async def neighbour(task_id: str) -> str:
        async with registry.lease(config) as client:
            info = await client.get_task(task_id, retry=False)
            while not info.state.is_terminal:
                await asyncio.sleep(0.05)
                info = await client.get_task(task_id, retry=False)
            return info.state.value

    async with registry.lease(config):  # keeps the client while the stuck lease ends
        victim = asyncio.create_task(stuck())
        await in_flight.wait()
        await _until(lambda: fake.stats.poll_requests == 1)  # its GET is held by the fake
        neighbours = [asyncio.create_task(neighbour(fake.submit(PROMPT))) for _ in range(10)]
        await asyncio.sleep(0.05)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert registry.lease_count(config) >= 1
        assert await asyncio.gather(*neighbours) == ["success"] * 10
        assert not leased[0].is_closed
        assert await neighbour(fake.submit(PROMPT)) == "success"
    assert leased[0].is_closed


async def test_each_event_loop_has_its_own_client(fake: FakeFluxServer) -> None:
    registry = ClientRegistry()
    config = _config(fake)
    other_loop: list[AsyncFluxClient] = []

    async def lease_and_poll() -> None:
        async with registry.lease(config) as client:
            other_loop.append(client)
            await client.get_balance()

    async with registry.lease(config) as here:
        thread = threading.Thread(target=asyncio.run, args=(lease_and_poll(),))
        thread.start()
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive()
        assert other_loop[0] is not here
        assert other_loop[0].is_closed
        assert not here.is_closed
    assert registry.built == 2


async def test_the_registry_shows_no_key(fake: FakeFluxServer) -> None:
    registry = ClientRegistry()
    async with registry.lease(_config(fake)) as client:
        assert KEY not in repr(registry)
        assert KEY not in repr(client)
        assert repr(registry) == "ClientRegistry(clients=1)"


def test_the_process_registry_is_a_client_registry() -> None:
    assert isinstance(shared_clients, ClientRegistry)
