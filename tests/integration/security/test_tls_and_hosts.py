"""TLS and hosts: https unless loopback or opted out, and the key goes to the configured host only.

* The base URL rule, read from real Airflow connections through ``FluxHook``.
* Redirects from the API (every 3xx, to another port and to another host name)
  are never followed, in the worker's sync client (the operator) and in the
  trigger's async client: the other server sees nothing.
* Result downloads never carry the key, whatever header carries it, across redirects.
* Certificates are verified: against a self-signed HTTPS server the handshake
  fails before any request (so before the key) leaves.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import AirflowFailException
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flux_provider.api.client import FluxClient
from flux_provider.api.config import DEFAULT_BASE_URL, ClientConfig, shared_ssl_context
from flux_provider.api.downloads import ResultDownloader
from flux_provider.api.errors import TransportError
from flux_provider.hooks import FluxHook
from flux_provider.operators import FluxGenerateImageOperator
from flux_provider.testing import render_image
from tests.integration.security.hostile import (
    BALANCE_PATH,
    CREATE_PATH,
    ESTIMATE_PATH,
    POLL_PATH,
    Answer,
    HostileServer,
    envelope,
    json_answer,
    task_data,
)
from tests.support.airflow import task_context
from tests.support.security import HOSTILE_CONN_ID, KEY, run_trigger, trigger_for

PNG = render_image("tls test", 1, "1:1")

BASE_URLS: list[tuple[str | None, dict[str, Any], str | None]] = [
    # (connection host, extras, the base URL the client gets; None = refused)
    (None, {}, DEFAULT_BASE_URL),
    ("api.crun.ai", {}, "https://api.crun.ai"),
    ("https://api.flux.example", {}, "https://api.flux.example"),
    ("flux.example.com", {}, "https://flux.example.com"),
    ("http://api.flux.example", {}, None),
    ("http://api.flux.example", {"allow_insecure_http": "false"}, None),
    ("http://api.flux.example", {"allow_insecure_http": True}, "http://api.flux.example"),
    ("http://api.flux.example", {"allow_insecure_http": "true"}, "http://api.flux.example"),
    ("http://10.0.0.5:8080", {}, None),
    ("http://192.168.1.20", {}, None),
    ("http://127.0.0.1.nip.io", {}, None),
    ("http://localhost.evil.example", {}, None),
    ("http://127.0.0.1:8080", {}, "http://127.0.0.1:8080"),
    ("http://127.8.9.10:8080", {}, "http://127.8.9.10:8080"),
    ("http://localhost:8080", {}, "http://localhost:8080"),
    ("http://[::1]:8080", {}, "http://[::1]:8080"),
]


@pytest.mark.parametrize(("host", "extras", "expected"), BASE_URLS)
def test_base_url_must_be_https_unless_loopback_or_opted_in(
    monkeypatch: pytest.MonkeyPatch, host: str | None, extras: dict[str, Any], expected: str | None
) -> None:
    connection: dict[str, Any] = {"conn_type": "flux", "password": KEY, "extra": extras}
    if host is not None:
        connection["host"] = host
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_TLS", json.dumps(connection))
    hook = FluxHook(flux_conn_id="flux_tls")
    if expected is None:
        with pytest.raises(ValueError, match="plain http to a remote host") as info:
            hook.get_config()
        assert "allow_insecure_http" in str(info.value)
        assert KEY not in str(info.value)
    else:
        assert hook.get_config().base_url == expected


def test_the_client_verifies_certificates_and_host_names() -> None:
    config = ClientConfig(api_key=KEY)
    assert config.base_url == "https://api.crun.ai"
    verify = config.httpx_options()["verify"]
    assert verify is shared_ssl_context()
    assert verify.verify_mode is ssl.CERT_REQUIRED
    assert verify.check_hostname is True


REDIRECTS = [301, 302, 303, 307, 308]


def _redirect(status: int, location: str) -> Answer:
    return Answer(status=status, headers=(("Location", location),), content_type=None)


@pytest.fixture
def thief() -> Iterator[HostileServer]:
    """Another server, where a hostile API would like the key to go."""
    with HostileServer() as server:
        yield server


@pytest.mark.parametrize("target", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("status", REDIRECTS)
def test_api_redirects_are_not_followed_by_the_operator(
    hostile_conn: HostileServer, thief: HostileServer, status: int, target: str
) -> None:
    hostile_conn.route(CREATE_PATH, _redirect(status, f"http://{target}:{thief.port}/steal"))
    operator = FluxGenerateImageOperator(
        task_id="generate", prompt="a fox", flux_conn_id=HOSTILE_CONN_ID, deferrable=True
    )
    with pytest.raises(AirflowFailException, match=f"unexpected code {status}"):
        operator.execute(task_context())
    assert thief.seen == []
    (request,) = hostile_conn.seen
    assert request.headers["x-api-key"] == KEY  # the key went to the configured host only


@pytest.mark.parametrize("status", REDIRECTS)
async def test_api_redirects_are_not_followed_by_the_trigger(
    hostile_conn: HostileServer, thief: HostileServer, status: int
) -> None:
    hostile_conn.route(POLL_PATH, _redirect(status, f"http://localhost:{thief.port}/steal"))
    (event,) = await run_trigger(trigger_for("task_1"))
    assert event["status"] == "error"
    assert event["status_code"] == status
    assert event["retryable"] is False
    assert thief.seen == []
    assert [seen.path for seen in hostile_conn.seen] == [POLL_PATH]


@pytest.mark.parametrize(
    ("path", "options"),
    [(BALANCE_PATH, {"min_balance": 1}), (ESTIMATE_PATH, {"max_credits": 100})],
    ids=["balance", "estimate"],
)
@pytest.mark.parametrize("status", REDIRECTS)
def test_api_redirects_are_not_followed_by_the_credit_checks(
    hostile_conn: HostileServer,
    thief: HostileServer,
    status: int,
    path: str,
    options: dict[str, Any],
) -> None:
    hostile_conn.route(path, _redirect(status, f"http://localhost:{thief.port}/steal"))
    operator = FluxGenerateImageOperator(
        task_id="generate",
        prompt="a fox",
        flux_conn_id=HOSTILE_CONN_ID,
        deferrable=True,
        **options,
    )
    with pytest.raises(AirflowFailException, match=f"unexpected code {status}"):
        operator.execute(task_context())
    assert thief.seen == []
    (request,) = hostile_conn.seen  # nothing was submitted
    assert request.path == path
    assert request.headers["x-api-key"] == KEY


@pytest.mark.parametrize("status", REDIRECTS)
def test_api_redirects_are_not_followed_by_the_test_button(
    hostile_conn: HostileServer, thief: HostileServer, status: int
) -> None:
    hostile_conn.route(BALANCE_PATH, _redirect(status, f"http://localhost:{thief.port}/steal"))
    ok, message = FluxHook(flux_conn_id=HOSTILE_CONN_ID).test_connection()
    assert not ok
    assert f"unexpected code {status}" in message
    assert KEY not in message
    assert thief.seen == []
    assert [seen.path for seen in hostile_conn.seen] == [BALANCE_PATH]


@pytest.mark.parametrize("header_name", ["x-api-key", "Authorization", "X-Flux-Token"])
def test_result_downloads_never_carry_the_key(
    hostile: HostileServer,
    thief: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    header_name: str,
) -> None:
    """The API hands out a result URL on another host that redirects once: no hop sees the key."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{HOSTILE_CONN_ID.upper()}",
        hostile.connection_json(KEY, header_name=header_name),
    )
    hostile.route(CREATE_PATH, json_answer(envelope({"task_id": "task_dl_1"})))
    hostile.route(
        POLL_PATH,
        json_answer(envelope(task_data("task_dl_1", media_urls=[thief.url("/r/1.png")]))),
    )
    thief.route("/r/1.png", _redirect(302, thief.url("/cdn/1.png")))
    thief.route("/cdn/1.png", Answer(prefix=PNG, content_type="image/png"))
    operator = FluxGenerateImageOperator(
        task_id="generate",
        prompt="a fox",
        flux_conn_id=HOSTILE_CONN_ID,
        deferrable=False,
        download_to=str(tmp_path),
    )

    result = operator.execute(task_context())

    assert [Path(s["location"]).name for s in result["stored"]] == ["task_dl_1_0.png"]
    assert [seen.path for seen in thief.seen] == ["/r/1.png", "/cdn/1.png"]
    for seen in thief.seen:
        assert header_name.lower() not in seen.headers
        assert "authorization" not in seen.headers
        assert KEY not in json.dumps(dict(seen.headers)) + seen.target
    api_requests = hostile.seen
    assert {seen.path for seen in api_requests} == {CREATE_PATH, POLL_PATH}
    for seen in api_requests:  # positive control: the API itself did get the key, in the header
        expected = f"Bearer {KEY}" if header_name == "Authorization" else KEY
        assert seen.headers[header_name.lower()] == expected
        assert KEY not in seen.target
        assert KEY.encode() not in seen.body


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, bytes]:
    """A server TLS context with a self-signed certificate for 127.0.0.1, and its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context, cert_pem


@pytest.fixture
def tls_server(self_signed: tuple[ssl.SSLContext, bytes]) -> Iterator[HostileServer]:
    with HostileServer(tls=self_signed[0]) as server:
        server.route(POLL_PATH, json_answer(envelope(task_data("task_1", media_urls=[]))))
        server.route("/img.png", Answer(prefix=PNG, content_type="image/png"))
        yield server


def test_the_tls_server_works_for_a_client_that_trusts_it(
    tls_server: HostileServer, self_signed: tuple[ssl.SSLContext, bytes]
) -> None:
    """Positive control: the failures below come from verification, not from a broken server."""
    trusting = ssl.create_default_context(cadata=self_signed[1].decode())
    response = httpx.get(tls_server.url(POLL_PATH), verify=trusting, timeout=10)
    assert response.status_code == 200
    assert len(tls_server.seen) == 1


def test_sync_client_refuses_an_untrusted_certificate_before_sending(
    tls_server: HostileServer,
) -> None:
    config = ClientConfig(api_key=KEY, base_url=tls_server.base_url)
    with FluxClient(config, sleep=lambda seconds: None) as flux:
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED") as info:
            flux.get_task("task_1")
    assert tls_server.seen == []
    assert KEY not in str(info.value)


def test_the_test_button_refuses_an_untrusted_certificate_before_sending(
    tls_server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{HOSTILE_CONN_ID.upper()}", tls_server.connection_json(KEY))
    ok, message = FluxHook(flux_conn_id=HOSTILE_CONN_ID).test_connection()
    assert not ok
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert KEY not in message
    assert tls_server.seen == []


async def test_trigger_refuses_an_untrusted_certificate_before_sending(
    tls_server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{HOSTILE_CONN_ID.upper()}", tls_server.connection_json(KEY))
    (event,) = await run_trigger(trigger_for("task_1"))
    assert event["status"] == "error"
    assert "CERTIFICATE_VERIFY_FAILED" in event["message"]
    assert tls_server.seen == []


def test_downloads_refuse_an_untrusted_certificate(
    tls_server: HostileServer, tmp_path: Path
) -> None:
    # Private hosts allowed: the server is on loopback, and the refusal must come from TLS.
    downloader = ResultDownloader(sleep=lambda seconds: None, allow_private_hosts=True)
    try:
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            downloader.download_all([tls_server.url("/img.png")], tmp_path, "task_1")
    finally:
        downloader.close()
    assert tls_server.seen == []
    assert list(tmp_path.iterdir()) == []
