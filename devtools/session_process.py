"""One command in a session of its own, its output appended to a log file: :class:`SessionProcess`.

A session holds everything the command forks, also children that move to process groups of
their own (Airflow's task runners do), so stopping or killing the session leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from flux_provider.testing.lifecycle import StartStop

from .sessions import process_alive, session_processes, stop_session
from .standalone_logs import log_tail

__all__ = ["SessionProcess", "SessionProcessError"]

_SWEEP_INTERVAL = 0.1


class SessionProcessError(RuntimeError):
    """A session did not end after a signal that should have ended it."""


class SessionProcess(StartStop):
    """``args`` started in a new session, stdout and stderr appended to ``log_path``.

    :attr:`pid` is also the session id (and the process group id) of everything it forks. After
    :meth:`stop` or :meth:`kill` the last pid stays readable; :meth:`start` starts it again.

    Args:
        name: What the process is, for messages (``"scheduler"``).
        args: The command.
        log_path: The log file (appended to; each start writes a ``=== ... ===`` header line).
        env: Its environment (``None``: this process's).
        cwd: Its working directory.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = [str(arg) for arg in args]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._live = False

    def start(self) -> SessionProcess:
        """Start the command (a no-op while it runs)."""
        if self.running:
            return self
        self._close_log()
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"=== {' '.join(self.args)} ===\n".encode())
        self._log_file.flush()
        self._process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._live = True
        return self

    @property
    def pid(self) -> int | None:
        """The pid of the command as last started (``None`` before the first start)."""
        return self._process.pid if self._process is not None else None

    @property
    def session(self) -> int | None:
        """The session id of the command and everything it forked (its :attr:`pid`)."""
        return self.pid

    @property
    def running(self) -> bool:
        """Started, not stopped or killed through this object, and the command has not exited."""
        return self._live and self._process is not None and self._process.poll() is None

    @property
    def crashed(self) -> bool:
        """The command ended by itself: neither :meth:`stop` nor :meth:`kill` ended it."""
        return self._live and self._process is not None and self._process.poll() is not None

    @property
    def returncode(self) -> int | None:
        """The command's exit status once it ended (negative: the signal that ended it)."""
        return self._process.poll() if self._process is not None else None

    def processes(self) -> dict[int, list[str]]:
        """The live processes of the session: pid -> argv."""
        return session_processes(self.session) if self.session is not None else {}

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the session, wait up to ``timeout`` s, then SIGKILL what is left (idempotent)."""
        if self._process is not None and (self._live or self.processes()):
            self._live = False
            stop_session(self._process, timeout)
        self._close_log()

    def send_signal(self, sig: int) -> list[int]:
        """Send ``sig`` to every process of the session at once; the pids signalled."""
        if self._process is None:
            return []
        pids = sorted(self.processes())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return pids

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 20.0) -> list[int]:
        """Send ``sig`` to the whole session and wait until every process of it is gone.

        Meant for signals that end processes (SIGKILL, SIGTERM, SIGINT); a crash is simulated
        with SIGKILL. Returns the pids signalled.

        Raises:
            SessionProcessError: Something of the session still runs after ``timeout`` s.
        """
        self._live = False
        pids = self.send_signal(sig)
        deadline = time.monotonic() + timeout
        while any(process_alive(pid) for pid in pids) or self.processes():
            if time.monotonic() > deadline:
                raise SessionProcessError(
                    f"{self.name}: still running {timeout:.0f}s after signal {sig}: "
                    f"{self.processes()}"
                )
            time.sleep(_SWEEP_INTERVAL)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=timeout)
        self._close_log()
        return pids

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log, under a header naming the file."""
        return log_tail(self.log_path, lines)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
