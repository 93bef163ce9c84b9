"""Client behaviour that needs precise control of answers: ``httpx.MockTransport``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from flux_provider import __version__
from flux_provider.api.client import FluxClient
from flux_provider.api.config import ClientConfig
from flux_provider.api.errors import (
    InvalidInputError,
    MalformedResponseError,
    RateLimitedError,
    UnexpectedStatusError,
)
from flux_provider.api.retry import RetryPolicy
from flux_provider.api.wire import read_answer

KEY = "sk-unit-SECRET-42"


def _ok(data: object) -> httpx.Response:
    return httpx.Response(200, json={"code": 200, "message": "success", "data": data})


def _recording(seen: list[httpx.Request], data: object) -> httpx.MockTransport:
    """A transport that keeps each request in ``seen`` and answers ``_ok(data)``."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _ok(data)

    return httpx.MockTransport(handler)


def interpret_answer(
    config: ClientConfig, status: int, headers: dict[str, str], body: bytes
) -> Any:
    return read_answer(status, headers, body, secret=config.api_key)


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
            _ok({"task_id": "t1"}),
        ]
    )
    transport = httpx.MockTransport(lambda request: next(answers))
    config = ClientConfig(api_key=KEY, retry=RetryPolicy(retry_after_max=60))
    with FluxClient(config, transport=transport, sleep=delays.append) as flux:
        assert flux.create_task({"prompt": "x"}) == "t1"
    assert delays == [60]


def test_unlisted_status_code() -> None:
    with pytest.raises(UnexpectedStatusError, match="418"):
        interpret_answer(ClientConfig(api_key=KEY), 200, {}, b'{"code": 418, "message": "teapot"}')


def test_error_page_without_json_uses_the_http_status() -> None:
    with pytest.raises(RateLimitedError):
        interpret_answer(ClientConfig(api_key=KEY), 429, {}, b"<html>slow down</html>")


@pytest.mark.parametrize("body", [b"\xff\xfe\x00garbage", b"[1, 2]", b'"a string"'])
def test_unusable_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        interpret_answer(ClientConfig(api_key=KEY), 200, {}, body)


def test_create_answer_without_task_id_is_malformed() -> None:
    transport = httpx.MockTransport(lambda request: _ok({"id": "nope"}))
    with FluxClient(ClientConfig(api_key=KEY), transport=transport) as flux:
        with pytest.raises(MalformedResponseError, match="task_id"):
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
    assert [r.url.host for r in seen] == ["api.crun.ai"]


def test_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/TaskInfo"):
            return _ok({"task_id": "task_1", "status": "running"})
        if request.url.path.endswith("/balance"):
            return _ok({"balance": 42})
        if request.url.path.endswith("/estimate-credits"):
            return _ok({"credits": 6, "estimated": False})
        return _ok({"task_id": "task_1"})

    with FluxClient(ClientConfig(api_key=KEY), transport=httpx.MockTransport(handler)) as flux:
        flux.create_task(
            {"prompt": "x", "seed": 1, "input_urls": ["https://e.x/a.png"]},
            callback_url="https://cb.example/x",
        )
        flux.create_task({"prompt": "y"})
        flux.get_task("task_1")
        assert flux.get_balance() == 42
        assert flux.estimate_credits({"prompt": "z"}) == 6
    create, bare, info, balance, estimate = seen
    assert create.method == "POST"
    assert str(create.url) == "https://api.crun.ai/api/v1/client/job/CreateTask"
    assert create.headers["x-api-key"] == KEY
    assert json.loads(create.content) == {
        "model": "flux-2-max",
        "callback_url": "https://cb.example/x",
        "input": {"prompt": "x", "seed": 1, "img_urls": ["https://e.x/a.png"]},
    }
    assert json.loads(bare.content) == {"model": "flux-2-max", "input": {"prompt": "y"}}
    assert info.method == "GET"
    assert str(info.url) == "https://api.crun.ai/api/v1/client/job/TaskInfo?task_id=task_1"
    assert (balance.method, str(balance.url)) == (
        "GET",
        "https://api.crun.ai/api/v1/client/account/balance",
    )
    assert (estimate.method, str(estimate.url)) == (
        "POST",
        "https://api.crun.ai/api/v1/client/job/estimate-credits",
    )
    assert json.loads(estimate.content) == {"model": "flux-2-max", "input": {"prompt": "z"}}


def test_bearer_auth_option() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _ok({"balance": 1})

    config = ClientConfig(api_key=KEY, auth_header="Authorization")
    with FluxClient(config, transport=httpx.MockTransport(handler)) as flux:
        flux.get_balance()
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in seen[0].headers


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": "flux-2-pro"}, "model"),
        ({"callback_url": "ftp://cb.example/x"}, "callback_url"),
        ({"callback_url": "/relative"}, "callback_url"),
    ],
)
def test_bad_request_fields_fail_before_sending(kwargs: dict[str, Any], field: str) -> None:
    seen: list[httpx.Request] = []
    transport = _recording(seen, {})
    with FluxClient(ClientConfig(api_key=KEY), transport=transport) as flux:
        with pytest.raises(InvalidInputError, match=field):
            flux.create_task({"prompt": "x"}, **kwargs)
    assert seen == []


def test_api_layer_imports_nothing_from_airflow() -> None:
    """Every module of ``flux_provider.api`` and of the fake API (its pytest plugin included)
    imports with Airflow blocked."""
    code = (
        "import pkgutil, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'airflow' or name.startswith('airflow.'):\n"
        "            raise ImportError('airflow is blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import flux_provider.api, flux_provider.testing\n"
        "names = [m.name for m in pkgutil.iter_modules(flux_provider.api.__path__)]\n"
        "for name in names:\n"
        "    __import__('flux_provider.api.' + name)\n"
        "for module in pkgutil.iter_modules(flux_provider.testing.__path__):\n"
        "    __import__('flux_provider.testing.' + module.name)\n"
        "assert not any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules)\n"
        "print(len(names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 12


def test_idle_connections_outlive_the_longest_poll_interval() -> None:
    """Otherwise every poll at the interval cap would open a new connection (and TLS handshake)."""
    from flux_provider.api.polling import PollSchedule

    limits = ClientConfig(api_key=KEY).httpx_options()["limits"]
    assert limits.keepalive_expiry > PollSchedule().maximum


@pytest.mark.parametrize("key", ["k", "task", "sk-longer-key"])
def test_scrubbing_never_touches_field_names(key: str) -> None:
    body = json.dumps({"code": 200, "message": "success", "data": {"task_id": "task_1"}}).encode()
    envelope = interpret_answer(ClientConfig(api_key=key), 200, {}, body)
    assert envelope.data == {"task_id": "task_1"}


def test_every_call_names_the_distribution_and_its_version() -> None:
    seen: list[httpx.Request] = []
    transport = _recording(seen, {"balance": 5})
    with FluxClient(ClientConfig(api_key=KEY), transport=transport) as flux:
        flux.get_balance()
    assert seen[0].headers["user-agent"] == f"airflow-provider-flux/{__version__}"


@pytest.mark.parametrize("model", ["flux-2-pro", "FLUX-2-MAX", ""])
def test_another_model_is_refused_before_anything_is_sent(model: str) -> None:
    seen: list[httpx.Request] = []
    transport = _recording(seen, {})
    with FluxClient(ClientConfig(api_key=KEY), transport=transport) as flux:
        with pytest.raises(InvalidInputError, match="model must be 'flux-2-max'"):
            flux.create_task({"prompt": "x"}, model=model)
    assert seen == []
