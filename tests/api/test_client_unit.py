"""Client behaviour that needs precise control of answers: ``httpx.MockTransport``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from flux_provider.client import ClientConfig, FluxClient, RetryPolicy, interpret_answer
from flux_provider.errors import MalformedResponseError, RateLimitedError, UnexpectedStatusError

KEY = "sk-unit-SECRET-42"


def _ok(data: object) -> httpx.Response:
    return httpx.Response(200, json={"code": 200, "msg": "success", "data": data})


@pytest.mark.parametrize(
    "base_url",
    ["api.example.com", "ftp://api.example.com", "https://", "http://api.example.com"],
)
def test_config_rejects_bad_or_insecure_base_urls(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        ClientConfig(api_key=KEY, base_url=base_url)


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_plain_http_is_fine_on_loopback(base_url: str) -> None:
    assert ClientConfig(api_key=KEY, base_url=base_url).base_url == base_url


def test_plain_http_needs_an_explicit_opt_in() -> None:
    config = ClientConfig(api_key=KEY, base_url="http://flux.internal", allow_insecure_http=True)
    assert config.base_url == "http://flux.internal"


@pytest.mark.parametrize(
    ("field", "value"),
    [("api_key", ""), ("api_key", "  "), ("create_path", "api/v1"), ("timeout", 0.0)],
)
def test_config_rejects_bad_settings(field: str, value: object) -> None:
    options: dict[str, object] = {"api_key": KEY, field: value}
    with pytest.raises(ValueError, match=field):
        ClientConfig(**options)  # type: ignore[arg-type]


def test_retry_after_http_date() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    config = ClientConfig(api_key=KEY)
    with pytest.raises(RateLimitedError) as info:
        interpret_answer(config, 429, {"retry-after": format_datetime(when, usegmt=True)}, b"")
    assert info.value.retry_after is not None
    assert 25 <= info.value.retry_after <= 31


def test_retry_after_is_capped() -> None:
    delays: list[float] = []
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "99999"}, json={"code": 429}),
            _ok({"taskId": "t1"}),
        ]
    )
    transport = httpx.MockTransport(lambda request: next(answers))
    config = ClientConfig(api_key=KEY, retry=RetryPolicy(retry_after_max=60))
    with FluxClient(config, transport=transport, sleep=delays.append) as flux:
        assert flux.create_task({"prompt": "x"}) == "t1"
    assert delays == [60]


def test_unlisted_status_code() -> None:
    with pytest.raises(UnexpectedStatusError, match="418"):
        interpret_answer(ClientConfig(api_key=KEY), 200, {}, b'{"code": 418, "msg": "teapot"}')


def test_error_page_without_json_uses_the_http_status() -> None:
    with pytest.raises(RateLimitedError):
        interpret_answer(ClientConfig(api_key=KEY), 429, {}, b"<html>slow down</html>")


@pytest.mark.parametrize("body", [b"\xff\xfe\x00garbage", b"[1, 2]", b'{"msg": "no code"}'])
def test_unusable_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        interpret_answer(ClientConfig(api_key=KEY), 200, {}, body)


def test_create_answer_without_task_id_is_malformed() -> None:
    transport = httpx.MockTransport(lambda request: _ok({"id": "nope"}))
    with FluxClient(ClientConfig(api_key=KEY), transport=transport) as flux:
        with pytest.raises(MalformedResponseError, match="taskId"):
            flux.create_task({"prompt": "x"})


def test_declared_oversized_answer_is_refused_unread() -> None:
    big = httpx.Response(200, headers={"Content-Length": str(50 << 20)}, content=b"{}")
    transport = httpx.MockTransport(lambda request: big)
    with FluxClient(ClientConfig(api_key=KEY), transport=transport) as flux:
        with pytest.raises(MalformedResponseError, match="declares"):
            flux.get_task("t1")


def test_redirects_are_not_followed_with_the_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "https://elsewhere.example/steal"})

    with FluxClient(ClientConfig(api_key=KEY), transport=httpx.MockTransport(handler)) as flux:
        with pytest.raises(UnexpectedStatusError, match="302"):
            flux.get_task("t1")
    assert [r.url.host for r in seen] == ["api.kie.ai"]


def test_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _ok({"taskId": "task_1"})

    with FluxClient(ClientConfig(api_key=KEY), transport=httpx.MockTransport(handler)) as flux:
        flux.create_task({"prompt": "x", "seed": 1}, callback_url="https://cb.example/x")
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.kie.ai/api/v1/jobs/createTask"
    assert request.headers["x-api-key"] == KEY
    assert json.loads(request.content) == {
        "model": "flux-2-max",
        "callBackUrl": "https://cb.example/x",
        "input": {"prompt": "x", "seed": 1},
    }


def test_api_layer_imports_nothing_from_airflow() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'airflow' or name.startswith('airflow.'):\n"
        "            raise ImportError('airflow is blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import flux_provider.client, flux_provider.models, flux_provider.errors\n"
        "import flux_provider.polling, flux_provider.testing\n"
        "assert not any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_idle_connections_outlive_the_longest_poll_interval() -> None:
    """Otherwise every poll at the interval cap would open a new connection (and TLS handshake)."""
    from flux_provider.polling import PollSchedule

    limits = ClientConfig(api_key=KEY).httpx_options()["limits"]
    assert limits.keepalive_expiry > PollSchedule().maximum


@pytest.mark.parametrize("key", ["k", "task", "sk-longer-key"])
def test_scrubbing_never_touches_field_names(key: str) -> None:
    body = json.dumps({"code": 200, "msg": "success", "data": {"taskId": "task_1"}}).encode()
    envelope = interpret_answer(ClientConfig(api_key=key), 200, {}, body)
    assert envelope.data == {"taskId": "task_1"}
