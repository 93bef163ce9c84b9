"""``python -m flux_provider.testing`` and the ``flux_fake_server`` pytest fixture."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake import (
    BALANCE,
    CREATE,
    INFO,
    WAIT,
    LineReader,
    body,
    keyed_client,
    subprocess_env,
)

TIMEOUT = WAIT * 6
READY = re.compile(r"FLUX fake API listening on (http://127\.0\.0\.1:(\d+))")
CONNECTION = re.compile(r"AIRFLOW_CONN_FLUX_DEFAULT=(.+)")


class Cli:
    """A running ``python -m flux_provider.testing`` and its announced address."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.process = process
        self.lines = LineReader(process.stdout)
        first = self.lines.next()
        match = READY.fullmatch(first)
        assert match, first
        self.base_url = match[1]
        self.connection_line = self.lines.next()


@pytest.fixture
def start_cli() -> Iterator[Callable[..., Cli]]:
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, stdin: int | None = subprocess.DEVNULL) -> Cli:
        process = subprocess.Popen(
            [sys.executable, "-m", "flux_provider.testing", "--port", "0", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        processes.append(process)
        return Cli(process)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=TIMEOUT)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flux_provider.testing", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(
    start_cli: Callable[..., Cli], stop_signal: signal.Signals
) -> None:
    cli = start_cli("--api-key", "cli-key")

    with keyed_client(cli.base_url, "cli-key") as http:
        response = http.post(CREATE, json=body())
    cli.process.send_signal(stop_signal)

    assert response.status_code == 200
    assert re.fullmatch(r"task_[0-9a-f]+", response.json()["data"]["task_id"])
    assert cli.process.wait(timeout=TIMEOUT) == 0


def test_cli_prints_a_pasteable_connection_line(start_cli: Callable[..., Cli]) -> None:
    key = """it's "a" $KEY"""
    cli = start_cli("--api-key", key)

    match = CONNECTION.fullmatch(cli.connection_line)
    assert match, cli.connection_line
    (word,) = shlex.split(cli.connection_line)
    assert json.loads(word.partition("=")[2]) == {
        "conn_type": "flux",
        "host": cli.base_url,
        "password": key,
    }
    shell = subprocess.run(
        ["sh", "-c", f'export {cli.connection_line}; printf %s "$AIRFLOW_CONN_FLUX_DEFAULT"'],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert json.loads(shell.stdout)["password"] == key


def test_cli_wire_options(start_cli: Callable[..., Cli]) -> None:
    cli = start_cli(
        "--api-key",
        "k",
        "--duration",
        "0",
        "--status-words",
        "pending=queued, success=SUCCEEDED",
        "--result-shape",
        "url",
        "--failure-shape",
        "fail_msg",
        "--balance",
        "20",
        "--credits-per-image",
        "8",
    )

    with keyed_client(cli.base_url, "k") as http:
        task_id = http.post(CREATE, json=body()).json()["data"]["task_id"]
        data = http.get(INFO, params={"task_id": task_id}).json()["data"]
        balance = http.get(BALANCE).json()["data"]["balance"]
        refused = http.post(CREATE, json=body(resolution="2K"))

    assert data["status"] == "SUCCEEDED"
    assert data["result"] == f"{cli.base_url}/files/{task_id}/0.png"
    assert balance == 12
    assert refused.status_code == 402


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--status-words", "done=x"), "unknown status 'done'"),
        (("--status-words", "running"), "expected <status>=<word>"),
        (("--result-shape", "nope"), "invalid choice: 'nope'"),
        (("--failure-shape", "nope"), "invalid choice: 'nope'"),
        (("--balance", "-1"), "balance"),
        (("--host", "0.0.0.0"), "--allow-remote"),
    ],
)
def test_cli_refuses_bad_options(args: tuple[str, ...], fragment: str) -> None:
    result = _run(*args)

    assert result.returncode == 2
    assert fragment in result.stderr
    assert result.stdout == ""


def test_cli_stdin_control(start_cli: Callable[..., Cli]) -> None:
    cli = start_cli("--api-key", "k", "--stdin-control", stdin=subprocess.PIPE)
    assert cli.process.stdin is not None

    def command(line: str) -> str:
        assert cli.process.stdin is not None
        cli.process.stdin.write(line + "\n")
        cli.process.stdin.flush()
        return cli.lines.next()

    assert command("duration 0") == "ok"
    with keyed_client(cli.base_url, "k") as http:
        task_id = http.post(CREATE, json=body()).json()["data"]["task_id"]
        status = http.get(INFO, params={"task_id": task_id}).json()["data"]["status"]
    first = json.loads(command("stats"))
    second = json.loads(command("stats"))

    assert status == "success"
    assert (first["create_requests"], first["tasks_created"], first["poll_requests"]) == (1, 1, 1)
    assert (first["requests"], first["connections"]) == (2, 1)
    assert isinstance(first["at"], float)
    assert (second["create_requests"], second["requests"]) == (0, 0)  # counters since last time
    assert command("duration -1").startswith("error: duration must be")
    assert command("duration soon").startswith("error: could not convert")
    assert command("dance").startswith("error: unknown command 'dance'")
    assert command("quit") == "bye"
    assert cli.process.wait(timeout=TIMEOUT) == 0


def test_cli_stdin_control_stops_when_stdin_closes(start_cli: Callable[..., Cli]) -> None:
    cli = start_cli("--stdin-control", stdin=subprocess.PIPE)
    assert cli.process.stdin is not None
    port = int(cli.base_url.rsplit(":", 1)[1])

    cli.process.stdin.close()

    assert cli.process.wait(timeout=TIMEOUT) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=WAIT, trust_env=False)


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
                assert flux_fake_server.state_of(task_id) == "pending"
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
        env=subprocess_env(),
        timeout=TIMEOUT * 4,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
