"""Processes seen through Linux ``/proc``: liveness, sessions, and stopping a whole session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "live_processes",
    "process_alive",
    "process_stat",
    "session_processes",
    "stop_session",
]

_SWEEP_INTERVAL = 0.2
_REAP_TIMEOUT = 10.0


def process_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or ``None`` if it is gone.

    They start ``state ppid pgrp session ...`` (see ``proc(5)``); the command name is left
    out because it may itself contain spaces and parentheses.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as ended)."""
    fields = process_stat(pid)
    return fields is not None and fields[0] != "Z"


def live_processes() -> Iterator[tuple[int, list[str], list[str]]]:
    """Every live (non-zombie) process: pid, its :func:`process_stat` fields and its argv."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = process_stat(int(entry.name))
        if fields is None or len(fields) <= 3 or fields[0] == "Z":
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), fields, [arg.decode(errors="replace") for arg in argv if arg]


def session_processes(session_id: int) -> dict[int, list[str]]:
    """Live (non-zombie) processes whose session id is ``session_id``: pid -> argv."""
    return {pid: argv for pid, fields, argv in live_processes() if int(fields[3]) == session_id}


def stop_session(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM the session ``process`` leads, wait up to ``timeout`` s, then SIGKILL what is left.

    Airflow moves task runners into process groups of their own, so the whole
    session is swept, not only the group.
    """
    session = process.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None and not session_processes(session):
            break
        time.sleep(_SWEEP_INTERVAL)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session, signal.SIGKILL)
    for pid in session_processes(session):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_REAP_TIMEOUT)
