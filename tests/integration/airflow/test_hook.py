"""``FluxHook``: connection fields to client configuration, the Test button, provider metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from flux_provider import get_provider_info
from flux_provider.api import config
from flux_provider.hooks import FluxHook
from flux_provider.hooks.connection import build_config
from flux_provider.testing import FakeFluxServer
from tests.conftest import API_KEY
from tests.support.airflow import CONN_FIELDS
from tests.support.compat import CONNECTION_TEST_FAILURE_EXIT_CODE


def _config(**fields: Any) -> Any:
    options: dict[str, Any] = {"password": API_KEY, "host": None, "port": None, "extras": {}}
    options.update(fields)
    return build_config(**options)


@pytest.mark.parametrize(
    ("host", "port", "base_url"),
    [
        (None, None, "https://api.crun.ai"),
        ("", None, "https://api.crun.ai"),
        ("https://flux.example.com/", None, "https://flux.example.com"),
        ("flux.example.com", None, "https://flux.example.com"),
        ("127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("http://localhost:9000", None, "http://localhost:9000"),
    ],
)
def test_host_becomes_the_base_url(host: str | None, port: int | None, base_url: str) -> None:
    assert _config(host=host, port=port).base_url == base_url


def test_extras_configure_the_client() -> None:
    config = _config(
        host="http://flux.internal",
        extras={
            "header_name": "Authorization",
            "create_path": "/v9/create",
            "extra__flux__info_path": "/v9/info",
            "balance_path": "/v9/balance",
            "estimate_path": "",
            "timeout": "12.5",
            "allow_insecure_http": "true",
        },
    )
    assert config.auth_headers() == {"Authorization": f"Bearer {API_KEY}"}
    assert (config.create_path, config.info_path, config.balance_path, config.timeout) == (
        "/v9/create",
        "/v9/info",
        "/v9/balance",
        12.5,
    )
    assert config.estimate_path == "/api/v1/client/job/estimate-credits"


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"password": ""}, "api_key is empty"),
        ({"password": None}, "api_key is empty"),
        ({"host": "ftp://flux.example.com"}, "base_url"),
        ({"host": "http://flux.example.com"}, "plain http"),
        ({"extras": {"create_path": "no-slash"}}, "create_path"),
        ({"extras": {"balance_path": "no-slash"}}, "balance_path"),
        ({"extras": {"timeout": "0"}}, "timeout"),
    ],
)
def test_misconfigured_connections_are_named(fields: dict[str, Any], text: str) -> None:
    with pytest.raises(ValueError, match=text) as info:
        _config(**fields)
    assert "flux connection is misconfigured" in str(info.value)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("balance", "shown"), [(1234.5, "1,234.5"), (1e6, "1,000,000"), (6.5, "6.5"), (0, "0")]
)
def test_test_connection_asks_the_balance_and_creates_nothing(
    fake_api: FakeFluxServer, balance: float, shown: str
) -> None:
    fake_api.balance = balance
    ok, message = FluxHook().test_connection()
    assert ok, message
    assert message == f"Connected to {fake_api.base_url}: the account has {shown} credits."
    assert fake_api.stats.balance_requests == 1
    assert fake_api.stats.create_requests == 0
    assert fake_api.stats.tasks_created == 0


@pytest.mark.parametrize(
    ("connection", "text"),
    [
        ({"password": "wrong-key-123"}, "401"),
        ({"extra": {"balance_path": "/api/v1/nowhere"}}, "404"),
        ({"extra": {"info_path": "/x", "create_path": "/y", "balance_path": "/z"}}, "404"),
    ],
)
def test_test_connection_fails_with_the_servers_message(
    fake_api: FakeFluxServer,
    monkeypatch: pytest.MonkeyPatch,
    connection: dict[str, Any],
    text: str,
) -> None:
    conn = {"conn_type": "flux", "host": fake_api.base_url, "password": API_KEY, **connection}
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_BAD", json.dumps(conn))
    ok, message = FluxHook(flux_conn_id="flux_bad").test_connection()
    assert not ok
    assert text in message
    assert "wrong-key-123" not in message
    assert API_KEY not in message
    assert fake_api.stats.create_requests == 0


def test_test_connection_reports_a_disabled_key(fake_api: FakeFluxServer) -> None:
    fake_api.disable_key()
    ok, message = FluxHook().test_connection()
    assert not ok
    assert "403" in message
    assert "disabled" in message


def test_test_connection_reports_a_wrong_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools.standalone import free_loopback_ports

    (port,) = free_loopback_ports(1)
    conn = {"conn_type": "flux", "host": f"http://127.0.0.1:{port}", "password": API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_NOWHERE", json.dumps(conn))
    ok, message = FluxHook(flux_conn_id="flux_nowhere").test_connection()
    assert not ok
    assert f"127.0.0.1:{port}" in message
    assert "ConnectError" in message


def test_test_connection_reports_a_misconfiguration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_EMPTY", json.dumps({"conn_type": "flux"}))
    ok, message = FluxHook(flux_conn_id="flux_empty").test_connection()
    assert not ok
    assert "api_key is empty" in message


def test_balance_and_estimate(fake_api: FakeFluxServer) -> None:
    fake_api.balance = 99
    hook = FluxHook()
    assert hook.get_balance() == 99
    assert hook.estimate_credits({"prompt": "x", "resolution": "2K"}) == 12
    assert fake_api.stats.tasks_created == 0


async def test_async_balance_and_estimate(fake_api: FakeFluxServer) -> None:
    fake_api.balance = 7
    assert await FluxHook().aget_balance() == 7
    assert await FluxHook().aestimate_credits({"prompt": "x", "resolution": "2K"}) == 12
    assert fake_api.stats.estimate_requests == 1
    assert fake_api.stats.tasks_created == 0


async def test_async_twins(fake_api: FakeFluxServer) -> None:
    hook = FluxHook()
    flux_task_id = await hook.acreate_task({"prompt": "async"})
    assert (await hook.aget_task(flux_task_id)).flux_task_id == flux_task_id
    assert fake_api.stats.tasks_created == 1


def test_sync_client_is_reused(fake_api: FakeFluxServer) -> None:
    hook = FluxHook()
    flux_task_id = hook.create_task({"prompt": "reuse"})
    hook.get_task(flux_task_id)
    assert hook.get_conn() is hook.client
    assert len({r.client_port for r in fake_api.stats.requests}) == 1
    hook.close()


def test_provider_info_lists_every_component() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-flux"
    (conn_type,) = info["connection-types"]
    assert conn_type["hook-class-name"] == "flux_provider.hooks.flux.FluxHook"
    assert set(conn_type["conn-fields"]) == CONN_FIELDS
    assert conn_type["ui-field-behaviour"]["relabeling"]["password"] == "API key"
    assert info["extra-links"] == ["flux_provider.links.result.FluxResultLink"]
    modules = [m for key in ("hooks", "operators", "sensors", "triggers") for m in info[key]]
    assert {m for entry in modules for m in entry["python-modules"]} == {
        "flux_provider.hooks.flux",
        "flux_provider.operators.generate",
        "flux_provider.operators.batch",
        "flux_provider.sensors.task",
        "flux_provider.triggers.task",
        "flux_provider.triggers.batch",
    }


def test_hook_ui_behaviour_matches_the_provider_info() -> None:
    behaviour = FluxHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == ["schema", "login", "port", "extra"]
    assert behaviour["relabeling"] == {"host": "API base URL", "password": "API key"}


def test_provider_info_defaults_match_the_client() -> None:
    conn_type = get_provider_info()["connection-types"][0]
    fields = conn_type["conn-fields"]
    assert fields["header_name"]["schema"]["default"] == config.DEFAULT_AUTH_HEADER
    assert fields["create_path"]["schema"]["default"] == config.DEFAULT_CREATE_PATH
    assert fields["info_path"]["schema"]["default"] == config.DEFAULT_INFO_PATH
    assert fields["balance_path"]["schema"]["default"] == config.DEFAULT_BALANCE_PATH
    assert fields["estimate_path"]["schema"]["default"] == config.DEFAULT_ESTIMATE_PATH
    assert fields["timeout"]["schema"]["default"] == config.DEFAULT_TIMEOUT
    assert conn_type["ui-field-behaviour"]["placeholders"]["host"] == "https://api.crun.ai"


def _cli_test(conn_id: str) -> subprocess.CompletedProcess[str]:
    """``airflow connections test``: what works where the UI's Test button does not."""
    return subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", conn_id],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        check=False,
    )


@pytest.mark.usefixtures("airflow_db")
def test_airflow_connections_test_command(
    fake_api: FakeFluxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _cli_test("flux_default")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Connection success!" in good.stdout
    assert fake_api.stats.balance_requests == 1
    bad = {"conn_type": "flux", "host": fake_api.base_url, "password": "wrong-key-123"}
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_BAD", json.dumps(bad))
    failed = _cli_test("flux_bad")
    assert failed.returncode == CONNECTION_TEST_FAILURE_EXIT_CODE
    assert "Connection failed!" in failed.stdout
    assert "401" in failed.stdout
    assert "wrong-key-123" not in failed.stdout + failed.stderr
    assert fake_api.stats.create_requests == 0
