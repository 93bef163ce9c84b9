"""Many ``FluxTaskTrigger`` runs in one event loop share one pooled client per connection."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from flux_provider.api.client import AsyncFluxClient
from flux_provider.api.config import MAX_CONNECTIONS, ClientConfig
from flux_provider.api.pool import ClientRegistry, shared_client
from flux_provider.hooks import flux as hooks
from flux_provider.testing import FakeFluxServer, Fault
from flux_provider.triggers import FluxTaskTrigger
from tests.support.airflow import flux_trigger

PROMPT = {"prompt": "a row of paper lanterns"}
ROTATED_KEY = "sk-flux-test-ROTATED-never-accepted"


class RecordingRegistry(ClientRegistry):
    """A registry that keeps every client it built, with the configuration it was built for."""

    def __init__(self) -> None:
        super().__init__(self._build)
        self.clients: list[tuple[ClientConfig, AsyncFluxClient]] = []

    def _build(self, config: ClientConfig) -> AsyncFluxClient:
        client = shared_client(config)
        self.clients.append((config, client))
        return client


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> RecordingRegistry:
    """A fresh registry in place of the process's one, so each test counts its own clients."""
    recording = RecordingRegistry()
    monkeypatch.setattr(hooks, "shared_clients", recording)
    return recording


_trigger = partial(flux_trigger, wait=60, poll_interval=0.2)


async def _event(trigger: FluxTaskTrigger) -> dict[str, Any]:
    (event,) = [event.payload async for event in trigger.run()]
    return dict(event)


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _ports(fake: FakeFluxServer) -> set[int]:
    return {request.client_port for request in fake.stats.requests}


async def test_200_triggers_share_one_client_and_the_bounded_pool(
    fake_api: FakeFluxServer, registry: RecordingRegistry
) -> None:
    task_ids = [fake_api.submit(PROMPT) for _ in range(200)]
    runs = [asyncio.create_task(_event(_trigger(task_id))) for task_id in task_ids]
    await _until(lambda: fake_api.stats.poll_requests > 0)
    (config, client), *_ = registry.clients
    await _until(lambda: registry.lease_count(config) == 200)
    events = await asyncio.gather(*runs)

    assert [event["status"] for event in events] == ["success"] * 200
    assert [event["flux_task_id"] for event in events] == task_ids
    assert len(registry.clients) == 1
    assert 1 <= len(_ports(fake_api)) <= MAX_CONNECTIONS
    assert fake_api.stats.poll_requests >= 200
    # The last trigger's cleanup closed the pool.
    assert client.is_closed
    assert registry.client_count() == 0


async def test_a_trigger_cancelled_mid_request_does_not_break_its_neighbours(
    fake_api: FakeFluxServer, registry: RecordingRegistry
) -> None:
    fake_api.add_fault(Fault(endpoint="poll", delay=3.0))
    victim = asyncio.create_task(_event(_trigger(fake_api.submit(PROMPT))))
    await _until(lambda: fake_api.stats.poll_requests == 1)  # its GET is held by the fake
    neighbours = [asyncio.create_task(_event(_trigger(fake_api.submit(PROMPT)))) for _ in range(20)]
    (config, client), *_ = registry.clients
    await _until(lambda: registry.lease_count(config) == 21)

    victim.cancel()  # what the triggerer does to a trigger it removes
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert registry.lease_count(config) == 20
    assert not client.is_closed

    events = await asyncio.gather(*neighbours)
    assert [event["status"] for event in events] == ["success"] * 20
    assert len(registry.clients) == 1
    assert client.is_closed
    # A trigger started afterwards gets a working client again.
    assert (await _event(_trigger(fake_api.submit(PROMPT))))["status"] == "success"


async def test_triggers_that_time_out_or_fail_leave_the_client_to_the_others(
    fake_api: FakeFluxServer, registry: RecordingRegistry
) -> None:
    fake_api.duration = 1.0
    fake_api.fail_next_tasks(1, code=422, message="prompt violates content policy")
    failing = fake_api.submit(PROMPT)
    fake_api.duration = 3600
    slow = fake_api.submit(PROMPT)
    fake_api.duration = 1.5
    others = [fake_api.submit(PROMPT) for _ in range(10)]
    events = await asyncio.gather(
        _event(_trigger(failing)),
        _event(_trigger(slow, deadline=time.time() + 0.5)),
        *(_event(_trigger(task_id)) for task_id in others),
    )
    assert [event["status"] for event in events] == ["failed", "timeout", *["success"] * 10]
    assert len(registry.clients) == 1
    assert registry.clients[0][1].is_closed


async def test_a_changed_key_gives_new_triggers_a_new_client(
    fake_api: FakeFluxServer, registry: RecordingRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_api.duration = 3600
    old_tasks = [fake_api.submit(PROMPT) for _ in range(5)]
    old_runs = [asyncio.create_task(_event(_trigger(task_id))) for task_id in old_tasks]
    await _until(lambda: fake_api.stats.poll_requests >= 5)
    (old_config, old_client), *_ = registry.clients

    # The connection now carries another key (one the fake does not accept, so the new
    # triggers' 401 shows which key they sent).
    connection = json.loads(fake_api.airflow_connection_json())
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLUX_DEFAULT", json.dumps({**connection, "password": ROTATED_KEY})
    )
    new_events = await asyncio.gather(
        *(_event(_trigger(fake_api.submit(PROMPT))) for _ in range(3))
    )
    assert [(event["status"], event["status_code"]) for event in new_events] == [("error", 401)] * 3
    # Each ended at its first poll, so they may not have overlapped: one new client or more,
    # every one built for the new key and closed with its last trigger.
    (_, first), *new_clients = registry.clients
    assert first is old_client
    assert new_clients
    for new_config, new_client in new_clients:
        assert new_client is not old_client
        assert (new_config.api_key, new_config.base_url) == (ROTATED_KEY, old_config.base_url)
        assert new_client.is_closed
    # The old triggers keep their client, with the old key.
    assert old_config.api_key == fake_api.api_key
    assert not old_client.is_closed
    assert registry.lease_count(old_config) == 5
    assert registry.client_count() == 1

    for task_id in old_tasks:
        fake_api.complete(task_id)
    old_events = await asyncio.gather(*old_runs)
    assert [event["status"] for event in old_events] == ["success"] * 5
    assert old_client.is_closed
    assert registry.client_count() == 0


async def test_the_last_trigger_to_end_closes_the_pool(
    fake_api: FakeFluxServer, registry: RecordingRegistry
) -> None:
    fake_api.duration = 3600
    early, late = fake_api.submit(PROMPT), fake_api.submit(PROMPT)
    runs = [asyncio.create_task(_event(_trigger(task_id))) for task_id in (early, late)]
    await _until(lambda: fake_api.stats.poll_requests >= 2)
    (config, client), *_ = registry.clients

    fake_api.complete(early)
    assert (await runs[0])["status"] == "success"
    assert not client.is_closed
    assert registry.lease_count(config) == 1

    fake_api.complete(late)
    assert (await runs[1])["status"] == "success"
    assert client.is_closed
    assert registry.client_count() == 0


async def test_hook_calls_share_the_triggers_client(
    fake_api: FakeFluxServer, registry: RecordingRegistry
) -> None:
    fake_api.duration = 3600
    task_id = fake_api.submit(PROMPT)
    run = asyncio.create_task(_event(_trigger(task_id)))
    await _until(lambda: fake_api.stats.poll_requests >= 1)
    hook = hooks.FluxHook()
    assert (await hook.aget_task(task_id)).flux_task_id == task_id
    assert await hook.aget_balance() >= 0
    assert len(registry.clients) == 1
    fake_api.complete(task_id)
    assert (await run)["status"] == "success"


@pytest.mark.parametrize(("poll_interval", "first_interval"), [(0.5, 0.5), (None, 2.0)])
async def test_the_first_poll_waits_a_random_part_of_the_first_interval(
    fake_api: FakeFluxServer,
    registry: RecordingRegistry,
    monkeypatch: pytest.MonkeyPatch,
    poll_interval: float | None,
    first_interval: float,
) -> None:
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return 0.3

    # The standard library module flux_provider.triggers.task draws the wait from.
    monkeypatch.setattr(random, "uniform", uniform)
    task_id = fake_api.submit(PROMPT)
    fake_api.complete(task_id)
    started = time.monotonic()
    event = await _event(_trigger(task_id, poll_interval=poll_interval))
    assert event["status"] == "success"
    assert draws == [(0.0, first_interval)]
    (request,) = fake_api.stats.requests
    assert request.received_at - started >= 0.3


async def test_blocks_starting_together_share_one_connection_read(
    fake_api: FakeFluxServer, registry: RecordingRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    original = hooks.FluxHook.aget_config

    async def slow_read(self: hooks.FluxHook) -> ClientConfig:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.2)  # a slow secrets backend
        return await original(self)

    monkeypatch.setattr(hooks.FluxHook, "aget_config", slow_read)
    entered = asyncio.Event()

    async def use(hold: bool) -> None:
        async with hooks.FluxHook().async_client():
            if hold:
                entered.set()
                await asyncio.sleep(3600)

    first = asyncio.create_task(use(hold=False))
    cancelled = asyncio.create_task(use(hold=True))
    others = [asyncio.create_task(use(hold=False)) for _ in range(20)]
    await asyncio.sleep(0.05)
    cancelled.cancel()  # while the shared read is under way
    await asyncio.gather(first, *others)
    assert reads == 1
    # Every block got a client built from the one configuration that read returned.
    assert len({id(config) for config, _ in registry.clients}) == 1
    assert not entered.is_set()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # Nothing is kept once the read ends: the next block reads again.
    async with hooks.FluxHook().async_client():
        pass
    assert reads == 2
