"""``python -m flux_provider.testing`` and the ``flux_fake_server`` pytest fixture."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def cli() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "flux_provider.testing", "--port", "0", "--api-key", "cli-key"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)


def _no_proxy_open(request: urllib.request.Request) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=TIMEOUT) as response:
        return int(response.status), bytes(response.read())


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(
    cli: subprocess.Popen[str], stop_signal: signal.Signals
) -> None:
    assert cli.stdout is not None
    readable, _, _ = select.select([cli.stdout], [], [], TIMEOUT)
    assert readable, "the server never announced itself"
    line = cli.stdout.readline()
    match = re.fullmatch(r"FLUX fake API listening on (http://127\.0\.0\.1:(\d+))\n", line)
    assert match, line
    assert int(match[2]) > 0

    request = urllib.request.Request(  # noqa: S310 - the loopback URL the CLI printed
        f"{match[1]}/api/v1/jobs/createTask",
        data=json.dumps({"model": "flux-2-max", "input": {"prompt": "cli"}}).encode(),
        headers={"x-api-key": "cli-key", "Content-Type": "application/json"},
        method="POST",
    )
    status, body = _no_proxy_open(request)
    assert status == 200
    assert json.loads(body)["data"]["taskId"].startswith("task_flux-2_")

    cli.send_signal(stop_signal)
    assert cli.wait(timeout=TIMEOUT) == 0


def test_cli_refuses_a_non_loopback_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flux_provider.testing", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=TIMEOUT,
        check=False,
    )

    assert result.returncode == 2
    assert "--allow-remote" in result.stderr
    assert result.stdout == ""


def test_pytest_plugin_fixture(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["flux_provider.testing.pytest_plugin"]\n'
    )
    (tmp_path / "test_uses_fixture.py").write_text(
        textwrap.dedent(
            """
            import socket

            import pytest

            seen = []


            def test_fixture_is_started(flux_fake_server):
                seen.append(flux_fake_server.port)
                assert flux_fake_server.api_key == "fake-key"
                assert flux_fake_server.duration == 0.2
                task_id = flux_fake_server.submit({"prompt": "x"})
                assert flux_fake_server.state_of(task_id) == "waiting"
                socket.create_connection(("127.0.0.1", flux_fake_server.port), 5).close()


            def test_fixture_was_stopped():
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", seen[0]), 5)
            """
        )
    )

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=TIMEOUT * 4,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
