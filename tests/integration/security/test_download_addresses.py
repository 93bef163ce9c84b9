"""Downloads check every address before anything is sent, and connect to the address checked.

A resolver that changes its answer between the check and the connection (DNS rebinding) is
the attack: the first answer is public, the next one loopback or the metadata address. The
loopback server counts the connections it accepts, so "nothing was sent" is proven by the
socket, not by the client's word. The resolver is a table in the test: no real name server is
asked, and nothing but 127.0.0.1 is ever connected to.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from flux_provider.api.client import FluxClient
from flux_provider.api.config import ClientConfig
from flux_provider.api.downloads import ResultDownloader, ResultRejectedError
from flux_provider.api.errors import TransportError
from flux_provider.testing import render_image
from tests.integration.security.hostile import (
    BALANCE_PATH,
    Answer,
    HostileServer,
    envelope,
    json_answer,
)
from tests.support.security import KEY

PNG = render_image("addresses", 1, "1:1")
PUBLIC_IP = "93.184.215.14"


class ChangingResolver:
    """Answers the n-th lookup of a name with its n-th answer (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str) -> Sequence[str]:
        """The next answer for ``host``; an unknown name fails as DNS would."""
        if host not in self.answers:
            raise OSError(f"unknown host {host!r}")
        asked = self.lookups.count(host)
        self.lookups.append(host)
        answers = self.answers[host]
        return answers[min(asked, len(answers) - 1)]


@pytest.fixture
def images() -> Iterator[HostileServer]:
    """A result host serving one good PNG at ``/ok.png``."""
    with HostileServer({"/ok.png": Answer(prefix=PNG, content_type="image/png")}) as server:
        yield server


def _download(
    url: str, folder: Path, resolver: ChangingResolver, *, private: bool, **options: Any
) -> Any:
    downloader = ResultDownloader(
        attempts=1,
        sleep=lambda seconds: None,
        allow_private_hosts=private,
        resolve=resolver,
        **options,
    )
    try:
        return downloader.download_all([url], folder, "task_addr_1")
    finally:
        downloader.close()


def test_a_name_rebinding_to_loopback_never_reaches_it(
    images: HostileServer, tmp_path: Path
) -> None:
    """Public when checked, loopback when connecting: refused before a byte is sent."""
    resolver = ChangingResolver({"localhost": [[PUBLIC_IP], ["127.0.0.1"]]})
    url = f"http://localhost:{images.port}/ok.png"
    with pytest.raises(ResultRejectedError, match=r"127\.0\.0\.1.*the API is public") as info:
        _download(url, tmp_path, resolver, private=False)
    assert not info.value.retryable
    assert images.connections == 0
    assert images.seen == []
    assert resolver.lookups == ["localhost", "localhost"]
    assert list(tmp_path.iterdir()) == []


def test_a_name_rebinding_to_the_metadata_address_is_refused_for_a_private_api(
    images: HostileServer, tmp_path: Path
) -> None:
    resolver = ChangingResolver({"rebind.example": [["127.0.0.1"], ["169.254.169.254"]]})
    url = f"http://rebind.example:{images.port}/ok.png"
    with pytest.raises(ResultRejectedError, match=r"169\.254\.169\.254.*never allowed"):
        _download(url, tmp_path, resolver, private=True)
    assert images.connections == 0
    assert resolver.lookups == ["rebind.example", "rebind.example"]


@pytest.mark.parametrize(
    "addresses",
    [
        ["169.254.169.254"],
        ["127.0.0.1", "169.254.169.254"],
        ["fe80::1"],
        ["::ffff:169.254.169.254"],
        ["224.0.0.1"],
        ["0.0.0.0"],
        ["240.0.0.1"],
    ],
)
def test_a_name_with_any_forbidden_address_is_refused_for_a_private_api(
    images: HostileServer, tmp_path: Path, addresses: list[str]
) -> None:
    """A private API base allows loopback and private results, never the forbidden ranges."""
    resolver = ChangingResolver({"inside.example": [addresses]})
    url = f"http://inside.example:{images.port}/ok.png"
    with pytest.raises(ResultRejectedError, match="never allowed") as info:
        _download(url, tmp_path, resolver, private=True)
    assert not info.value.retryable
    assert images.connections == 0
    assert resolver.lookups == ["inside.example"]  # refused before connecting


def test_every_redirect_hop_is_resolved_and_checked_before_connecting(
    images: HostileServer, tmp_path: Path
) -> None:
    resolver = ChangingResolver({"hop.example": [["127.0.0.1"], ["169.254.169.254"]]})
    images.route(
        "/r.png", Answer(status=302, headers=(("Location", f"http://hop.example:{images.port}/"),))
    )
    with pytest.raises(ResultRejectedError, match=r"169\.254\.169\.254.*never allowed"):
        _download(images.url("/r.png"), tmp_path, resolver, private=True)
    assert [seen.path for seen in images.seen] == ["/r.png"]
    assert images.connections == 1


def test_a_name_is_connected_to_at_its_checked_address_with_its_own_host_header(
    images: HostileServer, tmp_path: Path
) -> None:
    """Positive control: a private API's result on a name that resolves to loopback."""
    resolver = ChangingResolver({"images.example": [["127.0.0.1"]]})
    url = f"http://images.example:{images.port}/ok.png"
    (stored,) = _download(url, tmp_path, resolver, private=True)
    assert Path(stored.location).read_bytes() == PNG
    (seen,) = images.seen
    assert seen.headers["host"] == f"images.example:{images.port}"
    assert resolver.lookups == ["images.example", "images.example"]


def test_the_tls_server_name_is_the_urls_host_name(tmp_path: Path) -> None:
    """The connection goes to the checked address; TLS still names (and verifies) the host."""
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate: the handshake fails
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    resolver = ChangingResolver({"images.example": [["127.0.0.1"]]})
    with HostileServer(tls=context) as server:
        url = f"https://images.example:{server.port}/ok.png"
        with pytest.raises(TransportError):
            _download(url, tmp_path, resolver, private=True)
        assert server.seen == []
    assert names == ["images.example"]


# -- proxies from the environment ----------------------------------------------------------


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    """A forward proxy on loopback, named by ``HTTP_PROXY`` (it serves what it is asked for)."""
    with HostileServer({"/ok.png": Answer(prefix=PNG, content_type="image/png")}) as server:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", server.base_url)
        monkeypatch.setenv("http_proxy", server.base_url)
        yield server


def test_through_a_proxy_the_name_is_still_resolved_and_checked_first(
    proxy: HostileServer, tmp_path: Path
) -> None:
    """The proxy opens the connection; the provider checks the name before asking it."""
    resolver = ChangingResolver({"metadata.example": [["169.254.169.254"]]})
    with pytest.raises(ResultRejectedError, match="never allowed"):
        _download("http://metadata.example/ok.png", tmp_path, resolver, private=True)
    assert proxy.connections == 0


def test_a_proxy_on_a_private_address_carries_a_public_result(
    proxy: HostileServer, tmp_path: Path
) -> None:
    """The proxy itself is configuration, not a result host: its address is not refused."""
    resolver = ChangingResolver({"cdn.example": [[PUBLIC_IP]]})
    (stored,) = _download("http://cdn.example/ok.png", tmp_path, resolver, private=False)
    assert Path(stored.location).read_bytes() == PNG
    (seen,) = proxy.seen
    assert seen.target == "http://cdn.example/ok.png"
    assert resolver.lookups == ["cdn.example"]


def test_no_proxy_sends_a_result_host_directly(
    proxy: HostileServer, images: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "images.example")
    monkeypatch.setenv("no_proxy", "images.example")
    resolver = ChangingResolver({"images.example": [["127.0.0.1"]]})
    url = f"http://images.example:{images.port}/ok.png"
    (stored,) = _download(url, tmp_path, resolver, private=True)
    assert Path(stored.location).read_bytes() == PNG
    assert proxy.connections == 0
    assert len(images.seen) == 1


def test_the_sync_api_client_goes_through_the_environments_proxy(proxy: HostileServer) -> None:
    proxy.route(BALANCE_PATH, json_answer(envelope({"balance": 7})))
    config = ClientConfig(api_key=KEY, base_url="http://api.flux.example", allow_insecure_http=True)
    with FluxClient(config) as flux:
        assert flux.get_balance() == 7
    (seen,) = proxy.seen
    assert seen.target == f"http://api.flux.example{BALANCE_PATH}"
