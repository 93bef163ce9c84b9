"""Result downloads: private targets, redirects, DNS rebinding, size cap, content type, names.

Real servers on loopback wherever a socket can prove it (the fake API, the
hostile server); a spy transport counts the requests that actually left; a
table resolver stands in for DNS, so no test ever asks a real name server.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import AirflowFailException

from flux_provider.api.client import FluxClient
from flux_provider.api.config import ClientConfig
from flux_provider.api.downloads import (
    MAX_REDIRECTS,
    ResultDownloader,
    ResultRejectedError,
    address_kind,
    private_hosts_allowed,
)
from flux_provider.operators import FluxGenerateImageOperator
from flux_provider.operators.failures import FluxTaskError
from flux_provider.testing import FakeFluxServer, render_image
from tests.integration.security.hostile import (
    CREATE_PATH,
    POLL_PATH,
    Answer,
    Framing,
    HostileServer,
    envelope,
    json_answer,
    task_data,
)
from tests.support.airflow import task_context
from tests.support.security import HOSTILE_CONN_ID, KEY

PNG = render_image("download safety", 3, "1:1")
MIB = 1 << 20
BIG = 50 * MIB
READ_BOUND = 16 * MIB
PUBLIC_IP = "93.184.215.14"

DNS = {
    "localhost": ["127.0.0.1"],
    "api.crun.ai": ["104.21.0.1", "2606:4700::6812:1"],
    "cdn.example": [PUBLIC_IP],
    "cdn2.example": ["93.184.215.15"],
    "flux.corp.internal": ["10.4.5.6"],
    "metadata.internal": ["169.254.169.254"],
    "mixed.example": [PUBLIC_IP, "10.0.0.1"],
    "sixfour.example": ["fd00::7"],
}


def table_resolver(table: dict[str, list[str]]) -> Any:
    """A resolver answering from ``table``; unknown names fail as DNS would (no real lookup)."""

    def resolve(host: str) -> Sequence[str]:
        try:
            return table[host]
        except KeyError:
            raise OSError(f"unknown host {host!r}") from None

    return resolve


RESOLVE = table_resolver(DNS)


class SpyTransport(httpx.BaseTransport):
    """Counts the requests that actually reach the network layer."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.urls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Record, then pass on."""
        self.urls.append(str(request.url))
        return self.inner.handle_request(request)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


@pytest.fixture
def spy() -> SpyTransport:
    return SpyTransport()


@contextlib.contextmanager
def _downloader(spy: SpyTransport, **options: Any) -> Iterator[ResultDownloader]:
    downloader = ResultDownloader(transport=spy, sleep=lambda s: None, resolve=RESOLVE, **options)
    try:
        yield downloader
    finally:
        downloader.close()


@pytest.fixture
def public_api(spy: SpyTransport) -> Iterator[ResultDownloader]:
    """A downloader for an API on a public host: private targets refused."""
    with _downloader(spy, allow_private_hosts=False) as downloader:
        yield downloader


@pytest.fixture
def private_api(spy: SpyTransport) -> Iterator[ResultDownloader]:
    """A downloader for an API on loopback (the fake) or a private network."""
    with _downloader(spy, allow_private_hosts=True) as downloader:
        yield downloader


@pytest.fixture
def images() -> Iterator[HostileServer]:
    """A result host serving one good PNG at ``/ok.png``."""
    with HostileServer({"/ok.png": Answer(prefix=PNG, content_type="image/png")}) as server:
        yield server


# -- who may fetch what --------------------------------------------------------------------

BASE_URLS = [
    ("http://127.0.0.1:8080", True),
    ("http://localhost:8080", True),
    ("http://[::1]:8080", True),
    ("https://10.1.2.3", True),
    ("https://flux.corp.internal", True),
    ("https://sixfour.example", True),
    (f"https://{PUBLIC_IP}", False),
    ("https://api.crun.ai", False),
    ("https://mixed.example", False),
    ("https://unresolvable.example", False),
    ("not a url", False),
    ("", False),
]


@pytest.mark.parametrize(("base_url", "allowed"), BASE_URLS)
def test_private_results_are_allowed_only_when_the_api_is_private(
    base_url: str, allowed: bool
) -> None:
    assert private_hosts_allowed(base_url, resolve=RESOLVE) is allowed


def _private_targets(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/ok.png",
        f"http://localhost:{port}/ok.png",
        f"http://[::1]:{port}/ok.png",
        f"http://2130706433:{port}/ok.png",
        f"http://0x7f.0.0.1:{port}/ok.png",
        f"http://127.1:{port}/ok.png",
        f"http://[::ffff:127.0.0.1]:{port}/ok.png",
        f"http://0.0.0.0:{port}/ok.png",
        "http://10.0.0.5/a.png",
        "http://172.16.3.4/a.png",
        "http://192.168.0.10/a.png",
        "http://100.64.0.1/a.png",
        "http://[fd00::1]/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/a.png",
        "http://240.0.0.1/a.png",
        "http://224.0.0.1/a.png",
        "http://metadata.internal/computeMetadata/v1/",
        "http://mixed.example/a.png",
        "http://sixfour.example/a.png",
    ]


def test_private_targets_are_refused_before_any_request_when_the_api_is_public(
    public_api: ResultDownloader, spy: SpyTransport, images: HostileServer, tmp_path: Path
) -> None:
    targets = _private_targets(images.port)
    for url in targets:
        with pytest.raises(ResultRejectedError, match="refusing to download") as info:
            public_api.download_all([url], tmp_path, "task_1")
        assert not info.value.retryable, url
        assert "address" in str(info.value), url
    assert len(targets) == 20
    assert spy.urls == []
    assert images.seen == []
    assert list(tmp_path.iterdir()) == []


FORBIDDEN_ALWAYS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/a.png",
    "http://[::ffff:169.254.169.254]/a.png",
    "http://0.0.0.0/a.png",
    "http://224.0.0.1/a.png",
    "http://240.0.0.1/a.png",
]


@pytest.mark.parametrize("url", FORBIDDEN_ALWAYS)
def test_link_local_and_reserved_targets_are_refused_even_for_a_private_api(
    private_api: ResultDownloader, spy: SpyTransport, tmp_path: Path, url: str
) -> None:
    with pytest.raises(ResultRejectedError, match="never allowed"):
        private_api.download_all([url], tmp_path, "task_1")
    assert spy.urls == []


def test_an_octal_metadata_address_is_refused(
    private_api: ResultDownloader, spy: SpyTransport, tmp_path: Path
) -> None:
    """0251.0376.0251.0376 is 169.254.169.254 to inet_aton; httpx refuses it as a URL anyway."""
    with pytest.raises(ResultRejectedError, match="refusing to download"):
        private_api.download_all(["http://0251.0376.0251.0376/latest/"], tmp_path, "task_1")
    assert spy.urls == []


def test_the_default_downloader_refuses_a_loopback_result_url(
    images: HostileServer, tmp_path: Path
) -> None:
    """Without ``allow_private_hosts`` only public hosts are fetched: the fake's own URLs too."""
    downloader = ResultDownloader(sleep=lambda s: None)
    try:
        assert downloader.allow_private_hosts is False
        for url in (images.url("/ok.png"), f"http://localhost:{images.port}/ok.png"):
            with pytest.raises(ResultRejectedError, match="the API is public") as info:
                downloader.download_all([url], tmp_path, "task_1")
            assert not info.value.retryable
    finally:
        downloader.close()
    assert images.seen == []
    assert list(tmp_path.iterdir()) == []


def test_a_private_api_may_serve_results_from_loopback(
    private_api: ResultDownloader, images: HostileServer, tmp_path: Path
) -> None:
    """Positive control: the fake API's own result URLs still download."""
    (stored,) = private_api.download_all([images.url("/ok.png")], tmp_path, "task_1")
    assert Path(stored.location).read_bytes() == PNG


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "ftp://cdn.example/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "//cdn.example/a.png",
        "/relative/a.png",
        "http:///no-host.png",
        "gopher://127.0.0.1:70/_x",
    ],
)
def test_only_absolute_http_urls_are_fetched(
    private_api: ResultDownloader, spy: SpyTransport, tmp_path: Path, url: str
) -> None:
    with pytest.raises(ResultRejectedError, match="only absolute http") as info:
        private_api.download_all([url], tmp_path, "task_1")
    assert not info.value.retryable
    assert spy.urls == []


def test_an_unparsable_url_is_refused(
    private_api: ResultDownloader, spy: SpyTransport, tmp_path: Path
) -> None:
    with pytest.raises(ResultRejectedError, match="refusing to download") as info:
        private_api.download_all(["http://[::1/broken"], tmp_path, "task_1")
    assert not info.value.retryable
    assert spy.urls == []


# -- redirects and rebinding ---------------------------------------------------------------


def test_a_redirect_to_the_metadata_address_is_refused_before_it_is_followed(
    private_api: ResultDownloader, spy: SpyTransport, images: HostileServer, tmp_path: Path
) -> None:
    images.route(
        "/r.png",
        Answer(status=302, headers=(("Location", "http://169.254.169.254/latest/meta-data/"),)),
    )
    with pytest.raises(ResultRejectedError, match=r"169\.254\.169\.254.*never allowed"):
        private_api.download_all([images.url("/r.png")], tmp_path, "task_1")
    assert spy.urls == [images.url("/r.png")]
    assert list(tmp_path.iterdir()) == []


def _cdn(location: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example":
            return httpx.Response(302, headers={"Location": location})
        return httpx.Response(200, headers={"content-type": "image/png"}, content=PNG)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://10.0.0.7/a.png",
        "http://localhost/a.png",
        "http://[::1]:8080/a.png",
        "http://metadata.internal/",
        "http://mixed.example/a.png",
        "file:///etc/passwd",
    ],
)
def test_a_public_cdn_redirecting_to_a_private_target_is_refused(
    tmp_path: Path, location: str
) -> None:
    spy = SpyTransport(_cdn(location))
    with _downloader(spy, allow_private_hosts=False) as downloader:
        with pytest.raises(ResultRejectedError, match="refusing to download"):
            downloader.download_all(["https://cdn.example/a.png"], tmp_path, "task_1")
    assert spy.urls == ["https://cdn.example/a.png"]
    assert list(tmp_path.iterdir()) == []


def test_a_public_cdn_redirecting_to_another_public_host_is_followed(tmp_path: Path) -> None:
    """Positive control for the redirect checks."""
    spy = SpyTransport(_cdn("https://cdn2.example/final.png"))
    with _downloader(spy, allow_private_hosts=False) as downloader:
        (stored,) = downloader.download_all(["https://cdn.example/a.png"], tmp_path, "task_1")
    assert Path(stored.location).read_bytes() == PNG
    assert spy.urls == ["https://cdn.example/a.png", "https://cdn2.example/final.png"]


def test_redirect_loops_end_after_the_limit(
    private_api: ResultDownloader, spy: SpyTransport, images: HostileServer, tmp_path: Path
) -> None:
    images.route("/loop.png", Answer(status=302, headers=(("Location", "/loop.png"),)))
    with pytest.raises(ResultRejectedError, match=f"more than {MAX_REDIRECTS} redirects"):
        private_api.download_all([images.url("/loop.png")], tmp_path, "task_1")
    assert len(spy.urls) == MAX_REDIRECTS + 1


def test_the_body_of_a_redirect_is_never_read(
    private_api: ResultDownloader, images: HostileServer, tmp_path: Path
) -> None:
    """httpx reads a followed redirect's body whole; ours are closed unread."""
    images.route(
        "/r.png",
        Answer(status=302, headers=(("Location", "/ok.png"),), filler=BIG, framing="close"),
    )
    (stored,) = private_api.download_all([images.url("/r.png")], tmp_path, "task_1")
    assert Path(stored.location).read_bytes() == PNG
    sent = images.wait_answers(2)
    assert sent < READ_BOUND, f"{sent} bytes of the redirect were read"


# -- size, type and names ------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["close", "chunked", "length"])
def test_the_size_cap_is_enforced_while_streaming(
    private_api: ResultDownloader, images: HostileServer, tmp_path: Path, framing: Framing
) -> None:
    images.route(
        "/big.png",
        Answer(prefix=PNG, filler=BIG, content_type="image/png", framing=framing),
    )
    capped = ResultDownloader(max_bytes=MIB, sleep=lambda s: None, allow_private_hosts=True)
    try:
        with pytest.raises(ResultRejectedError, match="over the 1 MiB cap") as info:
            capped.download_all([images.url("/big.png")], tmp_path, "task_1")
    finally:
        capped.close()
    assert not info.value.retryable
    assert len(images.seen) == 1
    assert images.wait_answers(1) < READ_BOUND
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html><script>alert(1)</script></html>"),
        ("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>'),
        ("application/json", b'{"not": "an image"}'),
        ("text/plain", PNG),
        ("application/x-sh", b"#!/bin/sh\nrm -rf ~\n"),
        ("application/octet-stream", b"<html>not an image</html>"),
        (None, b"\x7fELF\x02\x01\x01" + b"\x00" * 64),
    ],
)
def test_only_images_are_stored(
    private_api: ResultDownloader,
    images: HostileServer,
    tmp_path: Path,
    content_type: str | None,
    body: bytes,
) -> None:
    images.route("/x", Answer(prefix=body, content_type=content_type))
    with pytest.raises(ResultRejectedError, match="image") as info:
        private_api.download_all([images.url("/x")], tmp_path, "task_1")
    assert not info.value.retryable
    assert list(tmp_path.iterdir()) == []


def test_file_names_never_come_from_the_server(
    private_api: ResultDownloader, images: HostileServer, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    evil = Answer(
        prefix=PNG,
        content_type="image/png",
        headers=(("Content-Disposition", 'attachment; filename="../../evil.sh"'),),
    )
    images.route("/../../etc/evil.sh", evil)
    images.route("/etc/evil.sh", evil)  # the same path after dot-segment removal
    url = images.url("/../../etc/evil.sh") + "?name=../../x.exe#../y"
    (stored,) = private_api.download_all([url], folder, "task_A.1:b-2")
    assert stored.location == str(folder / "task_A.1:b-2_0.png")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "task_A.1:b-2_0.png"]


@pytest.mark.parametrize("flux_task_id", ["..", "../x", "a/b", "a\\b", "", ".hidden", "x" * 200])
def test_unsafe_task_ids_never_become_file_names(
    private_api: ResultDownloader, spy: SpyTransport, tmp_path: Path, flux_task_id: str
) -> None:
    with pytest.raises(ValueError, match="unsafe flux task id"):
        private_api.download_all(["https://cdn.example/a.png"], tmp_path, flux_task_id)
    assert spy.urls == []


# -- through the operator ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result_url", "fragment", "error"),
    [
        # Not a URL the wire reads as a result: dropped, so the success holds no image.
        ("file:///etc/passwd", "holds no image URL", FluxTaskError),
        ("javascript:alert(document.cookie)", "holds no image URL", FluxTaskError),
        ("data:image/png;base64,iVBORw0KGgo=", "holds no image URL", FluxTaskError),
        # An http URL the downloader refuses.
        ("http://169.254.169.254/latest/meta-data/", "never allowed", AirflowFailException),
        ("http://[fe80::1]/a.png", "never allowed", AirflowFailException),
    ],
)
def test_the_operator_refuses_hostile_result_urls(
    hostile_conn: HostileServer,
    tmp_path: Path,
    result_url: str,
    fragment: str,
    error: type[Exception],
) -> None:
    hostile_conn.route(CREATE_PATH, json_answer(envelope({"task_id": "task_op_1"})))
    hostile_conn.route(
        POLL_PATH, json_answer(envelope(task_data("task_op_1", media_urls=[result_url])))
    )
    operator = FluxGenerateImageOperator(
        task_id="generate",
        prompt="a fox",
        flux_conn_id=HOSTILE_CONN_ID,
        deferrable=False,
        download_to=str(tmp_path / "out"),
    )
    with pytest.raises(error, match=fragment):
        operator.execute(task_context())
    assert {seen.path for seen in hostile_conn.seen} == {CREATE_PATH, POLL_PATH}
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def _success_event(url: str) -> dict[str, Any]:
    summary = {
        "flux_task_id": "task_pub_1",
        "state": "success",
        "raw_state": "success",
        "result_urls": [url],
        "fail_code": None,
        "fail_msg": None,
        "credits": 6.0,
        "created_at": 1.0,
        "completed_at": 2.0,
        "duration_s": 1.0,
    }
    return {"status": "success", "flux_task_id": "task_pub_1", "task": summary}


def _finished_on_loopback(
    fake_api: FakeFluxServer, tmp_path: Path
) -> tuple[FluxGenerateImageOperator, str]:
    """A downloading operator, and the loopback URL of a task the fake has finished."""
    flux_task_id = fake_api.submit({"prompt": "served from loopback"})
    fake_api.complete(flux_task_id)
    operator = FluxGenerateImageOperator(
        task_id="generate", prompt="a fox", download_to=str(tmp_path / "out")
    )
    return operator, f"{fake_api.base_url}/files/{flux_task_id}/0.png"


def test_the_operator_of_a_public_api_refuses_a_loopback_result_url(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    operator, url = _finished_on_loopback(fake_api, tmp_path)
    public = ClientConfig(api_key=KEY, base_url=f"https://{PUBLIC_IP}")
    operator.hook.__dict__["client"] = FluxClient(public)  # no request is ever sent to it
    with pytest.raises(AirflowFailException, match="the API is public"):
        operator.execute_complete(task_context(), _success_event(url))
    assert fake_api.stats.image_requests == 0


def test_the_operator_of_the_loopback_fake_api_downloads_its_results(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    """Positive control of the test above: same event, the API's own (loopback) base URL."""
    operator, url = _finished_on_loopback(fake_api, tmp_path)
    result = operator.execute_complete(task_context(), _success_event(url))
    assert [Path(s["location"]).name for s in result["stored"]] == ["task_pub_1_0.png"]
    assert fake_api.stats.image_requests == 1
    (request,) = fake_api.stats.requests
    assert "x-api-key" not in request.headers
    assert KEY not in json.dumps(result)


def test_address_kinds() -> None:
    assert address_kind("8.8.8.8") == "public"
    assert address_kind("127.0.0.1") == "private"
    assert address_kind("::1") == "private"
    assert address_kind("10.1.1.1") == "private"
    assert address_kind("::ffff:10.1.1.1") == "private"
    assert address_kind("169.254.169.254") == "forbidden"
    assert address_kind("fe80::1%eth0") == "forbidden"
    assert address_kind("224.0.0.251") == "forbidden"
    assert address_kind("0.0.0.0") == "forbidden"
