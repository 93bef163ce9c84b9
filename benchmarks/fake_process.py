"""The embedded fake API (:class:`~flux_provider.testing.FakeFluxServer`) in a process of its own.

A separate process keeps the fake's request handling off the measured process's CPU time and
GIL. The parent drives it over stdin/stdout, one line each way:

* ``duration <seconds>``: how long tasks created from now on take (answer ``ok``).
* ``stats``: the request counters since the last ``stats`` as one JSON line; the request log
  is dropped each time so a long benchmark does not grow the fake's memory.

It prints ``FLUX fake API listening on <base_url>`` once ready, and stops when stdin closes
(so it also ends when the benchmark process dies), on ``quit`` or on SIGTERM.

Run it as ``python -m benchmarks.fake_process --duration 30``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import httpx

from benchmarks.measure import die_with_parent, process_cpu_seconds

API_KEY = "sk-flux-bench-key"
CREATE_PATH = "/api/v1/jobs/createTask"
INFO_PATH = "/api/v1/jobs/recordInfo"
READY_PREFIX = "FLUX fake API listening on "
_STARTUP_TIMEOUT = 30.0
_REPLY_TIMEOUT = 30.0


class FakeApiProcess:
    """Parent side: start, command and stop the fake API process (a context manager).

    :param duration: seconds each task takes (changeable later with :meth:`set_duration`).
    :param log_path: file for the process's stderr (``None``: discarded).
    """

    def __init__(
        self, *, duration: float, api_key: str = API_KEY, log_path: Path | None = None
    ) -> None:
        self.duration = duration
        self.api_key = api_key
        self.log_path = log_path
        self.base_url = ""
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def __enter__(self) -> FakeApiProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The fake's process id."""
        if self._process is None:
            raise RuntimeError("the fake API process is not running")
        return self._process.pid

    def start(self) -> FakeApiProcess:
        """Start the process and wait (bounded) for its ready line."""
        if self.log_path is not None:
            self._log = self.log_path.open("a")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.fake_process",
                "--duration",
                str(self.duration),
                "--api-key",
                self.api_key,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log or subprocess.DEVNULL,
            text=True,
            bufsize=1,
            preexec_fn=die_with_parent,
        )
        try:
            line = self._read_line(_STARTUP_TIMEOUT)
            if not line.startswith(READY_PREFIX):
                raise RuntimeError(f"unexpected first line from the fake API: {line!r}")
            self.base_url = line.removeprefix(READY_PREFIX).strip()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_line(self, timeout: float) -> str:
        process = self._process
        if process is None or process.stdout is None:
            raise RuntimeError("the fake API process is not running")
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the fake API process said nothing for {timeout:.0f}s")
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake API process exited ({process.poll()})")
        return line

    def command(self, line: str) -> str:
        """Send one command line; its one-line answer."""
        process = self._process
        if process is None or process.stdin is None:
            raise RuntimeError("the fake API process is not running")
        process.stdin.write(line + "\n")
        process.stdin.flush()
        return self._read_line(_REPLY_TIMEOUT).strip()

    def set_duration(self, seconds: float) -> None:
        """Tasks created from now on take ``seconds``."""
        answer = self.command(f"duration {seconds!r}")
        if answer != "ok":
            raise RuntimeError(f"fake API refused duration {seconds}: {answer}")
        self.duration = seconds

    def take_stats(self) -> dict[str, int]:
        """Request counters since the previous call (call it while no request is in flight)."""
        return dict(json.loads(self.command("stats")))

    def cpu_seconds(self) -> float:
        """CPU seconds the fake process has used so far."""
        return process_cpu_seconds(self.pid) or 0.0

    def connection_json(self) -> str:
        """An ``AIRFLOW_CONN_<ID>`` value pointing at this fake."""
        return json.dumps({"conn_type": "flux", "host": self.base_url, "password": self.api_key})

    def stop(self) -> None:
        """Close stdin (the fake then stops), wait briefly, then terminate or kill (idempotent)."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


def create_tasks(base_url: str, api_key: str, count: int, prefix: str = "bench") -> list[str]:
    """Submit ``count`` tasks with plain httpx (no provider code); their task ids in order."""
    ids: list[str] = []
    with httpx.Client(base_url=base_url, headers={"x-api-key": api_key}, timeout=30) as client:
        for index in range(count):
            body = {"model": "flux-2-max", "input": {"prompt": f"{prefix} image {index}"}}
            response = client.post(CREATE_PATH, json=body)
            response.raise_for_status()
            ids.append(str(response.json()["data"]["taskId"]))
    return ids


# ------------------------------------------------------------------ child process


def _serve(duration: float, api_key: str) -> int:
    from flux_provider.testing import FakeFluxServer

    def stop_on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop_on_signal)
    with FakeFluxServer(api_key=api_key, duration=duration) as server:
        print(READY_PREFIX + server.base_url, flush=True)
        for raw in sys.stdin:  # ends when the parent closes stdin or dies
            command, _, argument = raw.strip().partition(" ")
            if command == "quit":
                break
            if command == "duration":
                server.duration = float(argument)
                answer: Any = "ok"
            elif command == "stats":
                stats = server.stats
                server.reset_stats()
                answer = json.dumps(
                    {
                        "create_requests": stats.create_requests,
                        "tasks_created": stats.tasks_created,
                        "poll_requests": stats.poll_requests,
                        "image_requests": stats.image_requests,
                        "connections": len({r.client_port for r in stats.requests}),
                        "at": time.time(),
                    }
                )
            else:
                answer = f"error: unknown command {command!r}"
            print(answer, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake API until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake_process")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each task takes")
    parser.add_argument("--api-key", default=API_KEY)
    args = parser.parse_args(argv)
    return _serve(args.duration, args.api_key)


if __name__ == "__main__":
    sys.exit(main())
