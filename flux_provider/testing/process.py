"""The fake API in a child process of its own: :class:`FakeFluxProcess`.

A separate process keeps the fake's request handling off the CPU time and the GIL of the
process under test. The child is ``python -m flux_provider.testing --stdin-control``: the
parent drives it with the commands of :mod:`flux_provider.testing.control`, and the child
stops when its stdin closes, so it ends with the parent however the parent ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

from .account import DEFAULT_BALANCE, DEFAULT_CREDITS_PER_IMAGE
from .control import READY_PREFIX, parse_connection_line
from .inflight import DEFAULT_RETRY_AFTER
from .lifecycle import StartStop, require_started
from .shapes import FailureShape, FakeTaskStatus, ResultShape

__all__ = ["FakeFluxProcess"]

_Launcher = TypeVar("_Launcher", bound="FakeFluxProcess")
_STOP_TIMEOUT = 5.0
_NOT_STARTED = "the fake API process is not started"
# The directory holding the flux_provider package, so the child imports this very copy.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class FakeFluxProcess(StartStop):
    """Start, command and stop ``python -m flux_provider.testing`` in a child process.

    Use it as a context manager::

        with FakeFluxProcess(api_key="k", duration=0.5) as fake:
            os.environ["AIRFLOW_CONN_FLUX_DEFAULT"] = fake.airflow_connection_json()
            ...
            fake.set_duration(30)
            counters = fake.take_stats()

    :meth:`start` returns once the child printed its ready lines, or raises within
    ``startup_timeout`` seconds. Closing it (or the parent dying) closes the child's stdin,
    which makes the child stop.
    """

    def __init__(
        self,
        *,
        api_key: str = "fake-key",
        duration: float = 1.0,
        auth_header: str = "x-api-key",
        status_words: Mapping[FakeTaskStatus, str] | None = None,
        result_shape: ResultShape = "media_urls",
        failure_shape: FailureShape = "result",
        balance: float = DEFAULT_BALANCE,
        credits_per_image: float = DEFAULT_CREDITS_PER_IMAGE,
        max_in_flight: int | None = None,
        rate_limit_retry_after: float = DEFAULT_RETRY_AFTER,
        verbose: bool = False,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        reply_timeout: float = 30.0,
    ) -> None:
        """Describe the child; nothing starts before :meth:`start`.

        Args:
            api_key: Key the fake requires.
            duration: Seconds each task takes (change it later with :meth:`set_duration`).
            auth_header: ``"x-api-key"`` or ``"Authorization"`` (``Bearer <key>``).
            status_words: As for :class:`~flux_provider.testing.FakeFluxServer`.
            result_shape: As for :class:`~flux_provider.testing.FakeFluxServer`.
            failure_shape: As for :class:`~flux_provider.testing.FakeFluxServer`.
            balance: Credits the account starts with.
            credits_per_image: What a 1K task costs.
            max_in_flight: As for :class:`~flux_provider.testing.FakeFluxServer`: creates
                beyond this many tasks in flight are answered 429.
            rate_limit_retry_after: ``Retry-After`` seconds of that 429.
            verbose: Make the child log every request to its stderr.
            log_path: File the child's stderr is appended to; ``None`` shares this process's.
            startup_timeout: Seconds :meth:`start` waits for the ready lines.
            reply_timeout: Seconds :meth:`command` waits for an answer.
        """
        self._api_key = api_key
        self._duration = duration
        self._argv = [
            sys.executable,
            "-m",
            "flux_provider.testing",
            "--stdin-control",
            "--api-key",
            api_key,
            "--duration",
            repr(float(duration)),
            "--auth-header",
            auth_header,
            "--result-shape",
            result_shape,
            "--failure-shape",
            failure_shape,
            "--balance",
            repr(float(balance)),
            "--credits-per-image",
            repr(float(credits_per_image)),
            "--rate-limit-retry-after",
            repr(float(rate_limit_retry_after)),
        ]
        if max_in_flight is not None:
            self._argv += ["--max-in-flight", str(max_in_flight)]
        if status_words:
            words = ",".join(f"{status}={word}" for status, word in status_words.items())
            self._argv += ["--status-words", words]
        if verbose:
            self._argv.append("--verbose")
        self._log_path = log_path
        self._startup_timeout = startup_timeout
        self._reply_timeout = reply_timeout
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._command_lock = threading.Lock()
        self._base_url: str | None = None
        self._connection_json: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self: _Launcher) -> _Launcher:
        """Start the child and wait (bounded) for its ready lines.

        Returns:
            The launcher itself, for chaining.

        Raises:
            RuntimeError: If already started, or the child exits or prints something else.
            TimeoutError: If the ready lines do not come within ``startup_timeout``.
        """
        if self._process is not None:
            raise RuntimeError("the fake API process is already running")
        if self._log_path is not None:
            self._log = Path(self._log_path).open("a")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")])
        )
        self._lines = queue.Queue()
        self._process = subprocess.Popen(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env=env,
        )
        self._reader = threading.Thread(
            target=self._read_stdout,
            args=(self._process.stdout, self._lines),
            name=f"fake-flux-process:{self._process.pid}",
            daemon=True,
        )
        self._reader.start()
        try:
            deadline = time.monotonic() + self._startup_timeout
            first = self._next_line(deadline - time.monotonic())
            if not first.startswith(READY_PREFIX):
                raise RuntimeError(f"unexpected first line from the fake API: {first!r}")
            second = self._next_line(deadline - time.monotonic())
            connection = parse_connection_line(second)
            if connection is None:
                raise RuntimeError(f"unexpected second line from the fake API: {second!r}")
            self._base_url = first.removeprefix(READY_PREFIX).strip()
            self._connection_json = connection
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the child's stdin (it then stops), wait, then terminate or kill; idempotent."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=_STOP_TIMEOUT)
            if self._reader is not None:
                self._reader.join(timeout=_STOP_TIMEOUT)
                self._reader = None
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- what the child serves -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running child.

        Raises:
            RuntimeError: Before :meth:`start`.
        """
        return require_started(self._base_url, _NOT_STARTED)

    @property
    def api_key(self) -> str:
        """The key the fake requires."""
        return self._api_key

    @property
    def duration(self) -> float:
        """Seconds tasks created from now on take (as last set)."""
        return self._duration

    @property
    def pid(self) -> int:
        """The child's process id.

        Raises:
            RuntimeError: If the child is not running.
        """
        return self._running().pid

    @property
    def argv(self) -> list[str]:
        """The child's command line."""
        return list(self._argv)

    def airflow_connection_json(self) -> str:
        """JSON for an ``AIRFLOW_CONN_<ID>`` variable pointing at the child (as it printed it).

        Raises:
            RuntimeError: Before :meth:`start`.
        """
        return require_started(self._connection_json, _NOT_STARTED)

    # -- control -------------------------------------------------------------------------

    def command(self, line: str) -> str:
        """Send one control command; its one-line answer.

        Raises:
            RuntimeError: If the child is not running or exits before answering.
            TimeoutError: If no answer comes within ``reply_timeout``.
        """
        with self._command_lock:
            stdin = self._running().stdin
            if stdin is None:
                raise RuntimeError("the fake API process has no stdin")
            try:
                stdin.write(line + "\n")
                stdin.flush()
            except OSError as exc:
                raise RuntimeError(f"the fake API process stopped reading: {exc}") from exc
            return self._next_line(self._reply_timeout).strip()

    def set_duration(self, seconds: float) -> None:
        """Tasks created from now on take ``seconds``.

        Raises:
            RuntimeError: If the child refuses the value.
        """
        answer = self.command(f"duration {float(seconds)!r}")
        if answer != "ok":
            raise RuntimeError(f"the fake API refused duration {seconds}: {answer}")
        self._duration = seconds

    def complete_all(self) -> int:
        """End every task that has not ended, successfully; how many there were.

        Raises:
            RuntimeError: If the child refuses the command.
        """
        answer = self.command("complete-all")
        verb, _, count = answer.partition(" ")
        if verb != "ok":
            raise RuntimeError(f"the fake API refused complete-all: {answer}")
        return int(count)

    def take_stats(self) -> dict[str, Any]:
        """Counters since the previous call (read while no request is in flight)."""
        report: dict[str, Any] = json.loads(self.command("stats"))
        return report

    # -- internals -----------------------------------------------------------------------

    def _running(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError("the fake API process is not running")
        return self._process

    @staticmethod
    def _read_stdout(stream: IO[str] | None, lines: queue.Queue[str | None]) -> None:
        # A thread (not select) because a text stream may buffer several lines at once.
        try:
            if stream is not None:
                for line in stream:
                    lines.put(line)
        except (OSError, ValueError):
            pass  # closed by stop()
        finally:
            lines.put(None)

    def _next_line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise TimeoutError(f"the fake API process said nothing for {timeout:.1f}s") from None
        if line is None:
            self._lines.put(None)  # later readers see the end too
            code = None
            if self._process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self._process.wait(timeout=_STOP_TIMEOUT)
            raise RuntimeError(f"the fake API process ended (exit status {code})")
        return line
