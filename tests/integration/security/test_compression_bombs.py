"""Compression bombs on every read from the network, with the peak memory measured.

Each bomb is served for real by the hostile server on loopback: gzip inside gzip (1 GiB
behind under a kilobyte), one layer of gzip, zlib deflate and raw deflate (512 MiB behind
about 500 KiB, under the 1 MiB cap on the wire), and a body labelled ``br``. Every API call
(create, poll, balance, estimate; the sync and the async client; the trigger's wait) and the
image download must refuse it with a clear, non-retryable error while Python's allocations
(``tracemalloc``, every thread) stay within a few MiB of the 1 MiB cap. A healthy compressed
answer is the positive control: it still reads.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from flux_provider.api.client import AsyncFluxClient, FluxClient
from flux_provider.api.config import MAX_RESPONSE_BYTES, ClientConfig
from flux_provider.api.downloads import ResultDownloader, ResultRejectedError
from flux_provider.api.errors import MalformedResponseError
from flux_provider.api.retry import RetryPolicy
from flux_provider.testing import render_image
from tests.integration.security.bombs import (
    BOMB_IDS,
    GZIP_WBITS,
    MIB,
    RAW_DEFLATE_WBITS,
    ZLIB_WBITS,
    Bomb,
    bomb,
    peak_memory,
)
from tests.integration.security.hostile import (
    ENDPOINTS,
    POLL_PATH,
    Answer,
    HostileServer,
    call_endpoint,
    envelope,
    json_answer,
    task_data,
)
from tests.support.security import KEY, run_trigger, trigger_for

CAP = MIB
PEAK_BOUND = CAP + 4 * MIB
"""The most a bounded reader may allocate while reading a bomb: the cap and a few MiB."""
TASK_ID = "task_bomb_1"
PROMPT = {"prompt": "a fox in the snow"}
PNG = render_image("bombs", 1, "1:1")

HEALTHY = {
    "create": envelope({"task_id": TASK_ID}),
    "poll": envelope(task_data(TASK_ID, media_urls=["https://cdn.example/1.png"])),
    "balance": envelope({"balance": 42}),
    "estimate": envelope({"credits": 6}),
}
EXPECTED = {"create": TASK_ID, "balance": 42.0, "estimate": 6.0}


def _config(server: HostileServer) -> ClientConfig:
    return ClientConfig(
        api_key=KEY,
        base_url=server.base_url,
        max_response_bytes=CAP,
        retry=RetryPolicy(max_attempts=1),
    )


def _bomb_answer(found: Bomb, content_type: str = "application/json") -> Answer:
    return Answer(prefix=found.body, headers=found.headers, content_type=content_type)


def _route_healthy(server: HostileServer) -> None:
    for endpoint, path in ENDPOINTS.items():
        server.route(path, json_answer(HEALTHY[endpoint]))


def _sync_call(flux: FluxClient, endpoint: str) -> Any:
    return call_endpoint(flux, endpoint, task_id=TASK_ID, prompt=PROMPT)


def _async_call(flux: AsyncFluxClient, endpoint: str) -> Awaitable[Any]:
    called: Awaitable[Any] = call_endpoint(flux, endpoint, task_id=TASK_ID, prompt=PROMPT)
    return called


def _check_refusal(found: Bomb, error: BaseException, peak: int) -> None:
    assert peak < PEAK_BOUND, f"reading the {found.id} bomb peaked at {peak / MIB:.1f} MiB"
    message = str(error)
    if found.refused_by_label:
        assert "Content-Encoding" in message, message
    else:
        assert "over the 1 MiB" in message, message
    assert getattr(error, "retryable", None) is False, message


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("bomb_id", BOMB_IDS)
def test_the_sync_client_reads_a_bomb_within_the_cap(
    hostile: HostileServer, bomb_id: str, endpoint: str
) -> None:
    found = bomb(bomb_id)
    _route_healthy(hostile)
    with FluxClient(_config(hostile), sleep=lambda seconds: None) as flux:
        _sync_call(flux, endpoint)  # warm-up: lazy imports and the connection
        hostile.route(ENDPOINTS[endpoint], _bomb_answer(found))
        with peak_memory() as peak, pytest.raises(MalformedResponseError) as info:
            _sync_call(flux, endpoint)
    _check_refusal(found, info.value, peak.bytes)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("bomb_id", BOMB_IDS)
async def test_the_async_client_reads_a_bomb_within_the_cap(
    hostile: HostileServer, bomb_id: str, endpoint: str
) -> None:
    found = await asyncio.to_thread(bomb, bomb_id)
    _route_healthy(hostile)
    async with AsyncFluxClient(_config(hostile), sleep=_no_sleep) as flux:
        await _async_call(flux, endpoint)
        hostile.route(ENDPOINTS[endpoint], _bomb_answer(found))
        with peak_memory() as peak, pytest.raises(MalformedResponseError) as info:
            await _async_call(flux, endpoint)
    _check_refusal(found, info.value, peak.bytes)


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.mark.parametrize("bomb_id", BOMB_IDS)
async def test_the_triggers_wait_reads_a_bomb_within_the_cap(
    hostile_conn: HostileServer, bomb_id: str
) -> None:
    """The trigger polls through the triggerer's shared client (its lanes), capped at 1 MiB."""
    assert MAX_RESPONSE_BYTES == CAP
    found = await asyncio.to_thread(bomb, bomb_id)
    _route_healthy(hostile_conn)
    (warm_up,) = await run_trigger(trigger_for(TASK_ID))
    assert warm_up["status"] == "success"
    hostile_conn.route(POLL_PATH, _bomb_answer(found))
    with peak_memory() as peak:
        (event,) = await run_trigger(trigger_for(TASK_ID))
    assert event["status"] == "error", event
    assert event["error_type"] == "MalformedResponseError"
    error = MalformedResponseError(event["message"], retryable=event["retryable"])
    _check_refusal(found, error, peak.bytes)


@pytest.mark.parametrize("bomb_id", BOMB_IDS)
def test_an_image_download_reads_a_bomb_within_the_cap(
    hostile: HostileServer, tmp_path: Path, bomb_id: str
) -> None:
    found = bomb(bomb_id)
    hostile.route("/ok.png", Answer(prefix=PNG, content_type="image/png"))
    hostile.route("/bomb.png", _bomb_answer(found, content_type="image/png"))
    downloader = ResultDownloader(
        max_bytes=CAP, attempts=1, sleep=lambda seconds: None, allow_private_hosts=True
    )
    try:
        downloader.download_all([hostile.url("/ok.png")], tmp_path / "warm", "task_warm")
        with peak_memory() as peak, pytest.raises(ResultRejectedError) as info:
            downloader.download_all([hostile.url("/bomb.png")], tmp_path / "out", TASK_ID)
    finally:
        downloader.close()
    _check_refusal(found, info.value, peak.bytes)
    assert list((tmp_path / "out").iterdir()) == []


# -- positive controls: a healthy compressed answer still reads ---------------------------

ENCODINGS = {
    "gzip": GZIP_WBITS,
    "x-gzip": GZIP_WBITS,
    "deflate": ZLIB_WBITS,
    "raw-deflate": RAW_DEFLATE_WBITS,
}


def _compressed(data: bytes, encoding: str) -> Answer:
    compressor = zlib.compressobj(6, zlib.DEFLATED, ENCODINGS[encoding])
    label = "deflate" if encoding == "raw-deflate" else encoding
    body = compressor.compress(data) + compressor.flush()
    return Answer(prefix=body, headers=(("Content-Encoding", label),))


def _route_compressed(server: HostileServer, encoding: str) -> None:
    for endpoint, path in ENDPOINTS.items():
        payload = json_answer(HEALTHY[endpoint]).prefix
        server.route(path, _compressed(payload, encoding))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_the_sync_client_reads_a_compressed_answer(hostile: HostileServer, encoding: str) -> None:
    _route_compressed(hostile, encoding)
    with FluxClient(_config(hostile)) as flux:
        results = {endpoint: _sync_call(flux, endpoint) for endpoint in ENDPOINTS}
    assert results["poll"].result_urls == ["https://cdn.example/1.png"]
    del results["poll"]
    assert results == EXPECTED
    assert {seen.headers["accept-encoding"] for seen in hostile.seen} == {"gzip, deflate"}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
async def test_the_async_client_reads_a_compressed_answer(
    hostile: HostileServer, encoding: str
) -> None:
    _route_compressed(hostile, encoding)
    async with AsyncFluxClient(_config(hostile)) as flux:
        results = {endpoint: await _async_call(flux, endpoint) for endpoint in ENDPOINTS}
    assert results["poll"].result_urls == ["https://cdn.example/1.png"]
    del results["poll"]
    assert results == EXPECTED
    assert {seen.headers["accept-encoding"] for seen in hostile.seen} == {"gzip, deflate"}


async def test_the_trigger_reads_a_compressed_answer(hostile_conn: HostileServer) -> None:
    _route_compressed(hostile_conn, "gzip")
    (event,) = await run_trigger(trigger_for(TASK_ID))
    assert event["status"] == "success", event
    assert hostile_conn.seen[0].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_an_image_download_reads_a_compressed_image(
    hostile: HostileServer, tmp_path: Path, encoding: str
) -> None:
    answer = _compressed(PNG, encoding)
    hostile.route(
        "/z.png", Answer(prefix=answer.prefix, headers=answer.headers, content_type="image/png")
    )
    downloader = ResultDownloader(sleep=lambda seconds: None, allow_private_hosts=True)
    try:
        (stored,) = downloader.download_all([hostile.url("/z.png")], tmp_path, TASK_ID)
    finally:
        downloader.close()
    assert Path(stored.location).read_bytes() == PNG
    assert stored.bytes == len(PNG)
    assert hostile.seen[0].headers["accept-encoding"] == "gzip, deflate"
