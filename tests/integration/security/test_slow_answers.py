"""Slow peers: an answer dripping one byte every quarter second never outlives its bound.

A per-read timeout never fires against such a peer (each read gets its byte in time), so only
a wall-clock bound on the whole request ends it. Every call below faces an answer that would
take at least 40 seconds to arrive, its head or its body dripped, and must end within a
generous multiple of its one-second bound (a correctness bound, not a speed test: the drip is
40 times longer). A request cut off so must also give back its lane of the triggerer's shared
transport, or every later trigger would starve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from flux_provider.api.client import AsyncFluxClient, FluxClient
from flux_provider.api.config import KEEPALIVE_EXPIRY, ClientConfig, shared_ssl_context
from flux_provider.api.downloads import ResultDownloader
from flux_provider.api.errors import RequestTimeoutError, TaskTimeoutError
from flux_provider.api.lanes import LaneTransport
from flux_provider.api.retry import RetryPolicy
from flux_provider.testing import render_image
from tests.integration.security.hostile import (
    BALANCE_PATH,
    ENDPOINTS,
    POLL_PATH,
    Answer,
    Dripped,
    HostileServer,
    call_endpoint,
    envelope,
    json_answer,
    task_data,
)
from tests.support.security import HOSTILE_CONN_ID, KEY, run_trigger, trigger_for

TIMEOUT = 1.0
"""The request timeout under test."""
DRIP = 0.25
DRIPPED_BYTES = 160
"""At one byte per ``DRIP``: 40 s for the dripped part, 40 times the bound."""
ENDS_WITHIN = 5 * TIMEOUT
"""A generous multiple of the bound, for a loaded two-core machine."""
DEADLINE = 2.0
"""A wait's deadline, from its start."""
WAIT_ENDS_WITHIN = 2 * (DEADLINE + TIMEOUT)
"""A wait ends within one request timeout of its deadline: twice that, for a loaded machine."""
TASK_ID = "task_slow_1"
PROMPT = {"prompt": "a snail"}
PNG = render_image("slow", 1, "1:1")
PARTS: list[Dripped] = ["head", "body"]

HEALTHY = {
    "create": envelope({"task_id": TASK_ID}),
    "poll": envelope(task_data(TASK_ID, status="running")),
    "balance": envelope({"balance": 42}),
    "estimate": envelope({"credits": 6}),
}


def _dripping(part: Dripped, body: bytes, content_type: str = "application/json") -> Answer:
    """``body`` as an answer whose head or body takes ``DRIPPED_BYTES * DRIP`` seconds."""
    if part == "head":
        slow = (("X-Slow", "s" * DRIPPED_BYTES),)
        return Answer(prefix=body, headers=slow, content_type=content_type, drip=DRIP, dripped=part)
    padded = body + b" " * DRIPPED_BYTES
    return Answer(prefix=padded, content_type=content_type, drip=DRIP, dripped=part)


def _config(server: HostileServer, timeout: float = TIMEOUT) -> ClientConfig:
    return ClientConfig(
        api_key=KEY, base_url=server.base_url, timeout=timeout, retry=RetryPolicy(max_attempts=1)
    )


def _sync_call(flux: FluxClient, endpoint: str) -> Any:
    return call_endpoint(flux, endpoint, task_id=TASK_ID, prompt=PROMPT)


def _async_call(flux: AsyncFluxClient, endpoint: str) -> Awaitable[Any]:
    called: Awaitable[Any] = call_endpoint(flux, endpoint, task_id=TASK_ID, prompt=PROMPT)
    return called


def _check_cut_off(error: RequestTimeoutError, elapsed: float) -> None:
    assert error.retryable
    assert elapsed < ENDS_WITHIN, f"the request held for {elapsed:.1f} s"


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_the_sync_client_cuts_a_dripping_answer_off(
    hostile: HostileServer, endpoint: str, part: Dripped
) -> None:
    hostile.route(ENDPOINTS[endpoint], _dripping(part, json_answer(HEALTHY[endpoint]).prefix))
    with FluxClient(_config(hostile), sleep=lambda seconds: None) as flux:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            _sync_call(flux, endpoint)
        elapsed = time.monotonic() - started
    _check_cut_off(info.value, elapsed)
    assert len(hostile.seen) == 1


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_the_async_client_cuts_a_dripping_answer_off(
    hostile: HostileServer, endpoint: str, part: Dripped
) -> None:
    hostile.route(ENDPOINTS[endpoint], _dripping(part, json_answer(HEALTHY[endpoint]).prefix))
    async with AsyncFluxClient(_config(hostile)) as flux:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            await _async_call(flux, endpoint)
        elapsed = time.monotonic() - started
    _check_cut_off(info.value, elapsed)
    assert len(hostile.seen) == 1


@pytest.mark.parametrize("part", PARTS)
def test_an_image_download_is_cut_off_at_its_bound(
    hostile: HostileServer, tmp_path: Path, part: Dripped
) -> None:
    hostile.route("/slow.png", _dripping(part, PNG, content_type="image/png"))
    downloader = ResultDownloader(
        attempts=1, allow_private_hosts=True, sleep=lambda seconds: None, download_timeout=TIMEOUT
    )
    try:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            downloader.download_all([hostile.url("/slow.png")], tmp_path, TASK_ID)
        elapsed = time.monotonic() - started
    finally:
        downloader.close()
    _check_cut_off(info.value, elapsed)
    assert list(tmp_path.iterdir()) == []


def test_a_download_is_bounded_by_default() -> None:
    downloader = ResultDownloader()
    try:
        assert 0 < downloader.download_timeout < float("inf")
    finally:
        downloader.close()


# -- waits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("part", PARTS)
async def test_a_deferred_wait_ends_within_one_request_of_its_deadline(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, part: Dripped
) -> None:
    """The trigger's timeout event comes on time: each poll is a request bounded in time."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{HOSTILE_CONN_ID.upper()}", hostile.connection_json(KEY, timeout=TIMEOUT)
    )
    hostile.route(POLL_PATH, _dripping(part, json_answer(HEALTHY["poll"]).prefix))
    started = time.time()
    trigger = trigger_for(TASK_ID, deadline=started + DEADLINE, max_consecutive_errors=5)
    (event,) = await run_trigger(trigger)
    elapsed = time.time() - started
    assert event["status"] == "timeout", event
    assert "timeout reached" in event["message"]
    assert "no complete answer within 1 s" in event["message"]
    assert elapsed < WAIT_ENDS_WITHIN, f"the wait ended {elapsed - DEADLINE:.1f} s late"
    assert len(hostile.seen) == event["polls"] >= 2


@pytest.mark.parametrize("part", PARTS)
def test_a_blocking_wait_ends_within_one_request_of_its_deadline(
    hostile: HostileServer, part: Dripped
) -> None:
    hostile.route(POLL_PATH, _dripping(part, json_answer(HEALTHY["poll"]).prefix))
    with FluxClient(_config(hostile), sleep=time.sleep) as flux:
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            flux.wait_for_task(TASK_ID, poll_interval=0.01, timeout=DEADLINE)
        elapsed = time.monotonic() - started
    assert elapsed < WAIT_ENDS_WITHIN, f"the wait ended {elapsed - DEADLINE:.1f} s late"


# -- the triggerer's lanes -----------------------------------------------------------------


@pytest.fixture
async def one_lane(hostile: HostileServer) -> AsyncIterator[AsyncFluxClient]:
    """An async client over a single lane: a lane that leaks starves the next request."""
    lanes = LaneTransport(1, ssl_context=shared_ssl_context(), keepalive_expiry=KEEPALIVE_EXPIRY)
    async with AsyncFluxClient(_config(hostile), transport=lanes) as flux:
        yield flux


@pytest.mark.parametrize("part", PARTS)
async def test_a_timed_out_request_gives_its_lane_back(
    hostile: HostileServer, one_lane: AsyncFluxClient, part: Dripped
) -> None:
    hostile.route(BALANCE_PATH, _dripping(part, json_answer(HEALTHY["balance"]).prefix))
    with pytest.raises(RequestTimeoutError):
        await one_lane.get_balance()
    hostile.route(BALANCE_PATH, json_answer(HEALTHY["balance"]))
    assert await one_lane.get_balance() == 42  # a leaked lane: a pool timeout after 1 s


@pytest.mark.parametrize("part", PARTS)
async def test_a_cancelled_request_gives_its_lane_back(
    hostile: HostileServer, one_lane: AsyncFluxClient, part: Dripped
) -> None:
    """What the triggerer does to a trigger whose task was cleared: cancel it mid-request."""
    hostile.route(BALANCE_PATH, _dripping(part, json_answer(HEALTHY["balance"]).prefix))
    pending = asyncio.create_task(one_lane.get_balance())
    await asyncio.to_thread(hostile.wait_requests, 1, ENDS_WITHIN)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    hostile.route(BALANCE_PATH, json_answer(HEALTHY["balance"]))
    assert await one_lane.get_balance() == 42
