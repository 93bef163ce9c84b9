"""The embedded fake API in a process of its own, as the benchmarks use it.

:class:`FakeApiProcess` is :class:`flux_provider.testing.FakeFluxProcess` with the benchmarks'
key, a reading of the child's CPU time and the fake's own times of every task
(:meth:`FakeApiProcess.task_times`, served by :mod:`benchmarks.fake_server`). A separate process
keeps the fake's request handling off the measured process's CPU time and GIL; it ends when the
benchmark process does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.measure import process_cpu_seconds
from flux_provider.testing import FakeFluxProcess
from flux_provider.testing.wire import CREATE_PATH, INFO_PATH, MODEL

__all__ = ["API_KEY", "CREATE_PATH", "INFO_PATH", "FakeApiProcess", "TaskTimes", "create_tasks"]

API_KEY = "sk-flux-bench-key"


@dataclass(frozen=True)
class TaskTimes:
    """One task as the fake recorded it: wall times from its own clock, not the API's seconds."""

    created_at: float
    completed_at: float | None
    """When the task ended (``created_at + duration`` for one that ran its course)."""
    status: str


class FakeApiProcess(FakeFluxProcess):
    """Start, command and stop the fake API process (a context manager).

    :param duration: seconds each task takes (changeable later with :meth:`set_duration`).
    :param log_path: file for the process's stderr (``None``: this process's stderr).
    :param max_in_flight: the service's limit on tasks in flight (429 above it); ``None``: none.
    """

    def __init__(
        self,
        *,
        duration: float,
        api_key: str = API_KEY,
        log_path: Path | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key, duration=duration, log_path=log_path, max_in_flight=max_in_flight
        )
        # The same command line, served by the module that also answers "tasks".
        self._argv[1:3] = ["-m", "benchmarks.fake_server"]

    def task_times(self) -> dict[str, TaskTimes]:
        """Every task the fake holds, by task id, in creation order."""
        answer = json.loads(self.command("tasks"))
        return {
            task_id: TaskTimes(float(created), None if ended is None else float(ended), status)
            for task_id, (created, ended, status) in answer.items()
        }

    def cpu_seconds(self) -> float:
        """CPU seconds the fake process has used so far."""
        return process_cpu_seconds(self.pid) or 0.0

    def connection_json(self) -> str:
        """An ``AIRFLOW_CONN_<ID>`` value pointing at this fake."""
        return self.airflow_connection_json()


def create_tasks(base_url: str, api_key: str, count: int, prefix: str = "bench") -> list[str]:
    """Submit ``count`` tasks with plain httpx (no provider code); their task ids in order."""
    ids: list[str] = []
    with httpx.Client(base_url=base_url, headers={"x-api-key": api_key}, timeout=30) as client:
        for index in range(count):
            body = {"model": MODEL, "input": {"prompt": f"{prefix} image {index}"}}
            response = client.post(CREATE_PATH, json=body)
            response.raise_for_status()
            ids.append(str(json.loads(response.content)["data"]["task_id"]))
    return ids
