"""``flux_provider.api.network``: deadlines, the async bound and ``NO_PROXY`` matching."""

from __future__ import annotations

import asyncio
import time

import pytest

from flux_provider.api.network import bypasses_proxy, request_deadline, within


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


async def test_within_cancels_work_past_its_bound() -> None:
    cancelled = asyncio.Event()

    async def stalled() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(asyncio.TimeoutError):
        await within(0.05, stalled())
    assert cancelled.is_set()
    assert await within(None, asyncio.sleep(0, result=7)) == 7
