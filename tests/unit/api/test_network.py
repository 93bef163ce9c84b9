"""``flux_provider.api.network``: deadlines, the async bound and ``NO_PROXY`` matching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from flux_provider.api.network import bypasses_proxy, request_deadline, within, within_by_timer


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypassed"),
    [
        ("cdn.example", "cdn.example", True),
        ("img.cdn.example", "cdn.example", True),
        ("img.cdn.example", ".cdn.example", True),
        ("notcdn.example", "cdn.example", False),
        ("cdn.example", "other.example, cdn.example:443", True),
        ("anything", "*", True),
        ("127.0.0.1", "localhost,127.0.0.1", True),
        ("::1", "[::1]", True),
        ("cdn.example", "http://cdn.example", True),
        ("cdn.example", "", False),
        ("CDN.Example", "cdn.example", True),
    ],
)
def test_no_proxy_matching(host: str, no_proxy: str, bypassed: bool) -> None:
    assert bypasses_proxy(host, no_proxy) is bypassed


def test_an_enclosing_deadline_that_comes_sooner_stays_in_force() -> None:
    with request_deadline(1.0) as outer:
        with request_deadline(60.0) as inner:
            assert inner is outer
        with request_deadline(0.5) as sooner:
            assert sooner.at < outer.at
    assert outer.seconds == 1.0
    assert outer.at <= time.monotonic() + 1.0


def test_a_deadline_expires() -> None:
    with request_deadline(0.0) as deadline:
        assert deadline.expired()
        assert "within the 0 s limit" in deadline.describe()


Bound = Callable[[float, Awaitable[int]], Awaitable[int]]
BOUNDS: list[Bound] = [within, within_by_timer]


@pytest.mark.parametrize("bound", BOUNDS, ids=["within", "by-timer"])
async def test_a_cancellation_is_raised_even_when_the_work_has_just_ended(bound: Bound) -> None:
    """``asyncio.wait_for`` before Python 3.12 returns the result here and loses the cancel."""
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caller = asyncio.ensure_future(bound(30, work))
    await asyncio.sleep(0)  # the caller now waits on the work
    work.set_result(7)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


@pytest.mark.parametrize("bound", BOUNDS, ids=["within", "by-timer"])
async def test_a_cancelled_caller_cancels_its_work(bound: Bound) -> None:
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caller = asyncio.ensure_future(bound(30, work))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert work.cancelled()


@pytest.mark.parametrize("bound", BOUNDS, ids=["within", "by-timer"])
async def test_work_within_its_bound_gives_its_result(bound: Bound) -> None:
    assert await bound(30, asyncio.sleep(0, result=7)) == 7


@pytest.mark.parametrize("bound", BOUNDS, ids=["within", "by-timer"])
async def test_work_past_its_bound_is_cancelled(bound: Bound) -> None:
    cancelled = asyncio.Event()

    async def stalled() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    with pytest.raises(asyncio.TimeoutError):
        await bound(0.05, stalled())
    assert cancelled.is_set()


async def test_within_no_bound_waits_for_the_work() -> None:
    assert await within(None, asyncio.sleep(0, result=7)) == 7
