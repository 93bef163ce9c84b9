"""Shared by the fake API's tests: the documented paths, a manual clock, HTTP shortcuts; and
by the tests that read what the fake received (:func:`prompt_of`)."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, cast

import httpx

from flux_provider.testing import FakeFluxServer, FakeTask

KEY = "fake-key"
# The paths as API.md documents them, spelled out so the tests check the fake against the
# contract rather than against its own constants.
CREATE = "/api/v1/client/job/CreateTask"
INFO = "/api/v1/client/job/TaskInfo"
BALANCE = "/api/v1/client/account/balance"
ESTIMATE = "/api/v1/client/job/estimate-credits"
WAIT = 5.0  # upper bound for anything asynchronous; tests never sleep to win a race
REPO = Path(__file__).resolve().parents[2]
# The fields of every TaskInfo ``data`` object, as API.md lists them.
DOCUMENTED_FIELDS = {
    "task_id",
    "provider",
    "model_version",
    "status",
    "param",
    "create_at",
    "result",
    "duration_s",
    "complete_at",
    "credits",
    "source",
}


class FakeClock:
    """Manually advanced monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def http_client(fake: FakeFluxServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=fake.base_url, headers=headers, timeout=WAIT, trust_env=False)


def keyed_client(base_url: str, key: str = KEY) -> httpx.Client:
    """A client of the fake at ``base_url`` sending ``key`` in ``x-api-key``."""
    return httpx.Client(
        base_url=base_url, headers={"x-api-key": key}, timeout=WAIT, trust_env=False
    )


def body(prompt: str = "a red fox", **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": "flux-2-max", "input": {"prompt": prompt, **extra}}
    return payload


def prompt_of(task: FakeTask) -> str:
    """The prompt the fake received for ``task`` (its ``input`` holds any JSON: a string here)."""
    prompt = task.input["prompt"]
    assert isinstance(prompt, str), prompt
    return prompt


def create(http: httpx.Client, payload: dict[str, Any] | None = None) -> str:
    response = http.post(CREATE, json=payload or body())
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["task_id"]
    return task_id


def task_info(http: httpx.Client, task_id: str, *, message_key: str = "message") -> dict[str, Any]:
    response = http.get(INFO, params={"task_id": task_id})
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["code"] == 200
    assert envelope[message_key] == "success"
    data: dict[str, Any] = envelope["data"]
    return data


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass
class CallbackSink:
    """Loopback HTTP listener recording callback bodies."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)


class _SinkServer(ThreadingHTTPServer):
    sink: CallbackSink


class _SinkHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        sink = cast(_SinkServer, self.server).sink
        length = int(self.headers["Content-Length"])
        sink.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        sink.received.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_sink() -> tuple[CallbackSink, _SinkServer, threading.Thread]:
    listener = _SinkServer(("127.0.0.1", 0), _SinkHandler)
    listener.sink = CallbackSink(url=f"http://127.0.0.1:{listener.server_port}/hook")
    thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return listener.sink, listener, thread


class LineReader:
    """Lines of a child's stdout, read by a thread so waits can be bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        except (OSError, ValueError):
            pass  # closed by the test's cleanup
        finally:
            self._lines.put(None)

    def next(self, timeout: float = WAIT * 6) -> str:
        line = self._lines.get(timeout=timeout)
        assert line is not None, "the child closed its stdout"
        return line.rstrip("\n")


def wait_until(condition: Callable[[], bool], timeout: float = WAIT * 2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def port_refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False
