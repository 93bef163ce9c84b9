"""Reading what a test Airflow logged: ``standalone.log`` (or a component's own log, such as a
distributed instance's ``scheduler.log``) and the per-trigger log files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "log_tail",
    "render_log_entry",
    "trigger_log_files",
    "triggerer_log",
    "workload_reported",
]


def trigger_log_files(logs_folder: Path) -> list[Path]:
    """Per-trigger log files the triggerer wrote (``<task log>.trigger.<job id>.log``)."""
    if not logs_folder.exists():
        return []
    return sorted(logs_folder.rglob("*.trigger.*.log"))


def triggerer_log(log_path: Path, logs_folder: Path) -> str:
    """The triggerer's lines from ``log_path`` (standalone's output), then every trigger log file.

    Each part starts with a ``==> <source> <==`` header line.
    """
    parts = ["==> standalone.log (triggerer) <=="]
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            name, sep, rest = line.partition(" | ")
            if sep and name.strip() == "triggerer":
                parts.append(rest)
    for path in trigger_log_files(logs_folder):
        parts.append(f"==> {path.relative_to(logs_folder)} <==")
        parts.extend(_render_log_line(line) for line in path.read_text().splitlines())
    return "\n".join(parts)


def workload_reported(
    log_path: Path, dag_id: str, task_id: str, run_id: str, try_number: int, map_index: int = -1
) -> bool:
    """Whether the scheduler logged that a workload of that task instance and try ended.

    That is an executor event in any state but ``queued`` (which the CeleryExecutor reports as
    soon as it hands a workload to the broker).
    """
    if not log_path.exists():
        return False
    key = (
        f"dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}', try_number={try_number}, "
        f"map_index={map_index})"
    )
    return any(
        "Received executor event" in line and "with state queued " not in line and key in line
        for line in log_path.read_text(errors="replace").splitlines()
    )


def log_tail(log_path: Path, lines: int) -> str:
    """The last ``lines`` lines of the log at ``log_path``, under a header naming the file."""
    if not log_path.exists():
        return f"(no {log_path.name})"
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {log_path.name} (tail) ---\n" + "\n".join(text)


def render_log_entry(entry: Any) -> str:
    """One structured log entry (``timestamp``, ``level``, ``event``, extras) as a text line."""
    if not isinstance(entry, Mapping):
        return str(entry)
    fields = dict(entry)
    head = [str(fields.pop(key)) for key in ("timestamp", "level", "event") if key in fields]
    extras = [f"{key}={value}" for key, value in fields.items()]
    return " ".join(head + extras)


def _render_log_line(line: str) -> str:
    """A JSON-lines log record as text (other lines unchanged)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    return render_log_entry(entry)
