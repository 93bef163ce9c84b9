"""The command line's ready lines and its stdin control protocol.

With ``--stdin-control`` the command line reads one command per line from stdin and answers
each with one line on stdout:

* ``duration <seconds>``: tasks created from now on take ``seconds`` (answer ``ok``).
* ``stats``: the counters since the previous ``stats`` as one JSON object (the
  :class:`~flux_provider.testing.FakeStats` counters, ``rate_limited_creates`` and
  ``peak_in_flight`` included, plus ``requests``, ``connections``: distinct client ports,
  ``in_flight``: the tasks in flight now, and ``at``: the wall time); the request log is
  dropped each time so a long run does not grow the fake's memory.
* ``complete-all``: end every task that has not ended, successfully (answer ``ok <count>``).
* ``quit``: stop serving (answer ``bye``).

Anything else is answered with ``error: <reason>``. Serving also stops when stdin closes, so
the fake ends when the process that started it dies.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable

from .server import FakeFluxServer

__all__ = [
    "CONNECTION_VARIABLE",
    "READY_PREFIX",
    "answer_command",
    "connection_line",
    "parse_connection_line",
    "serve_commands",
]

READY_PREFIX = "FLUX fake API listening on "
"""Start of the first line the command line prints, followed by the base URL."""

CONNECTION_VARIABLE = "AIRFLOW_CONN_FLUX_DEFAULT"
"""Variable named by the second line the command line prints (its ready line)."""


def connection_line(connection_json: str) -> str:
    """``AIRFLOW_CONN_FLUX_DEFAULT='<json>'``, quoted so it can follow ``export``."""
    return f"{CONNECTION_VARIABLE}={shlex.quote(connection_json)}"


def parse_connection_line(line: str) -> str | None:
    """The JSON of a :func:`connection_line`, or ``None`` if ``line`` is not one."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if len(words) != 1:
        return None
    name, equals, value = words[0].partition("=")
    return value if name == CONNECTION_VARIABLE and equals else None


def answer_command(server: FakeFluxServer, line: str) -> str | None:
    """The one-line answer to a control command; ``None`` after ``quit`` has its answer sent."""
    command, _, argument = line.strip().partition(" ")
    if command == "quit":
        return None
    if command == "duration":
        try:
            server.duration = float(argument)
        except ValueError as exc:
            return f"error: {exc}"
        return "ok"
    if command == "stats":
        stats = server.stats
        server.reset_stats()
        report: dict[str, object] = {
            **stats.counters(),
            "requests": len(stats.requests),
            "connections": len({request.client_port for request in stats.requests}),
            "in_flight": server.in_flight,
            "at": time.time(),
        }
        return json.dumps(report)
    if command == "complete-all":
        running = [
            task_id
            for task_id in server.tasks
            if server.state_of(task_id) in ("pending", "running")
        ]
        for task_id in running:
            server.complete(task_id)
        return f"ok {len(running)}"
    return (
        f"error: unknown command {command!r} "
        "(expected duration <seconds>, stats, complete-all or quit)"
    )


def serve_commands(
    server: FakeFluxServer, lines: Iterable[str], write: Callable[[str], None]
) -> None:
    """Answer each command of ``lines`` through ``write`` until ``quit`` or the lines end."""
    for line in lines:
        if not line.strip():
            continue
        answer = answer_command(server, line)
        write("bye" if answer is None else answer)
        if answer is None:
            return
