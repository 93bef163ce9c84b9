"""``ResultDownloader``: streamed, capped, typed, atomic copies of result images."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flux_provider.api.downloads import ResultDownloader, ResultExpiredError, ResultRejectedError
from flux_provider.api.errors import TransportError
from flux_provider.testing import FakeFluxServer, render_image

PNG = render_image("a test image", 1, "1:1")
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


class BrokenStream(httpx.SyncByteStream):
    """Sends one chunk, then the connection drops."""

    def __iter__(self) -> Iterator[bytes]:
        yield PNG[:100]
        raise httpx.ReadError("connection reset mid-body")


def _public(host: str) -> list[str]:
    """Every name is one public address: no DNS in tests."""
    return ["93.184.215.14"]


def _downloader(handler: object, **options: object) -> ResultDownloader:
    """A downloader over a mock transport; host names resolve to a public address."""
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    options.setdefault("allow_private_hosts", True)
    options.setdefault("resolve", _public)
    return ResultDownloader(transport=transport, sleep=lambda s: None, **options)  # type: ignore[arg-type]


def test_downloads_from_the_fake_api(tmp_path: Path) -> None:
    with FakeFluxServer(duration=0) as server:
        flux_task_id = server.submit({"prompt": "a test image", "seed": 1, "aspect_ratio": "1:1"})
        (url,) = [f"{server.base_url}/files/{flux_task_id}/0.png"]
        downloader = ResultDownloader(allow_private_hosts=True)
        (stored,) = downloader.download_all([url], tmp_path, flux_task_id)
        downloader.close()
        headers = server.stats.requests[-1].headers
    path = tmp_path / f"{flux_task_id}_0.png"
    assert stored.location == str(path)
    assert path.read_bytes() == PNG
    assert stored.bytes == len(PNG)
    assert stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert stored.content_type == "image/png"
    assert "x-api-key" not in headers
    assert "authorization" not in headers


def test_extension_comes_from_the_content_type_not_the_url(tmp_path: Path) -> None:
    downloader = _downloader(
        lambda request: httpx.Response(200, headers={"content-type": "image/jpeg"}, content=JPEG)
    )
    (stored,) = downloader.download_all(["https://cdn.example/../../evil.sh"], tmp_path, "task_1")
    assert stored.location == str(tmp_path / "task_1_0.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task_1_0.jpg"]


def test_missing_content_type_is_sniffed(tmp_path: Path) -> None:
    downloader = _downloader(lambda request: httpx.Response(200, content=PNG))
    (stored,) = downloader.download_all(["https://cdn.example/x"], tmp_path, "task_1")
    assert stored.content_type == "image/png"
    assert stored.location.endswith("task_1_0.png")


@pytest.mark.parametrize(
    ("headers", "body"),
    [({"content-type": "text/html"}, b"<html>"), ({}, b"#!/bin/sh\nrm -rf /")],
)
def test_non_images_are_rejected(tmp_path: Path, headers: dict[str, str], body: bytes) -> None:
    downloader = _downloader(lambda request: httpx.Response(200, headers=headers, content=body))
    with pytest.raises(ResultRejectedError) as info:
        downloader.download_all(["https://cdn.example/x"], tmp_path, "task_1")
    assert not info.value.retryable
    assert list(tmp_path.iterdir()) == []


def test_size_cap_is_enforced_while_streaming(tmp_path: Path) -> None:
    downloader = _downloader(
        lambda request: httpx.Response(200, headers={"content-type": "image/png"}, content=PNG),
        max_bytes=len(PNG) - 1,
    )
    with pytest.raises(ResultRejectedError, match="cap"):
        downloader.download_all(["https://cdn.example/x"], tmp_path, "task_1")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired_url_is_a_clear_terminal_error(tmp_path: Path, status: int) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status)

    with pytest.raises(ResultExpiredError, match="expired") as info:
        _downloader(handler).download_all(["https://cdn.example/x"], tmp_path, "task_1")
    assert not info.value.retryable
    assert len(calls) == 1


def test_failure_mid_stream_leaves_no_file_and_is_retried(tmp_path: Path) -> None:
    answers = iter(
        [
            httpx.Response(200, headers={"content-type": "image/png"}, stream=BrokenStream()),
            httpx.Response(503),
            httpx.Response(200, headers={"content-type": "image/png"}, content=PNG),
        ]
    )
    downloader = _downloader(lambda request: next(answers))
    (stored,) = downloader.download_all(["https://cdn.example/x"], tmp_path, "task_1")
    assert Path(stored.location).read_bytes() == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["task_1_0.png"]


def test_failure_mid_stream_on_the_last_attempt_leaves_nothing(tmp_path: Path) -> None:
    downloader = _downloader(
        lambda request: httpx.Response(
            200, headers={"content-type": "image/png"}, stream=BrokenStream()
        ),
        attempts=2,
    )
    with pytest.raises(TransportError):
        downloader.download_all(["https://cdn.example/x"], tmp_path, "task_1")
    assert list(tmp_path.iterdir()) == []


def test_unsafe_task_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        ResultDownloader().download_all(["https://cdn.example/x"], tmp_path, "../etc/x")
