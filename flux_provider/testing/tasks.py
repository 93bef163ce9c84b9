"""Fake generation tasks: their state walk over time and their ``recordInfo`` payload."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Ending", "FakeTask", "TaskRecord", "TaskState"]

TaskState = Literal["waiting", "queuing", "generating", "success", "fail"]
"""Task states in the order a task walks through them (``fail`` replaces ``success``)."""

_RUNNING_STATES: tuple[TaskState, ...] = ("waiting", "queuing", "generating")


@dataclass(frozen=True)
class FakeTask:
    """Snapshot of one task held by the fake API.

    Attributes:
        flux_task_id: The ``taskId`` the API returned.
        model: Model named in the create request.
        input: The request's ``input`` object (a copy).
        callback_url: The request's ``callBackUrl``, or ``None``.
        state: State when the snapshot was taken.
        duration: Seconds the task takes to end on its own.
        created_at: Wall time (``time.time()``) the task was created.
        completed_at: Wall time the task became terminal, or ``None`` while it runs. For a task
            that ended on its own this is ``created_at + duration``; for one ended by
            ``complete()``/``fail()`` it is the time of that call.
        fail_code: ``failCode`` of a failed task, else ``""``.
        fail_msg: ``failMsg`` of a failed task, else ``""``.
    """

    flux_task_id: str
    model: str
    input: Mapping[str, object]
    callback_url: str | None
    state: TaskState
    duration: float
    created_at: float
    completed_at: float | None
    fail_code: str
    fail_msg: str


@dataclass(frozen=True)
class Ending:
    """How a task ends: in ``success``, or in ``fail`` with a code and message."""

    state: Literal["success", "fail"]
    fail_code: str = ""
    fail_msg: str = ""


SUCCESS = Ending("success")


@dataclass(frozen=True)
class _Terminal:
    ending: Ending
    elapsed: float  # clock seconds from creation to the end
    completed_at: float  # wall time


def _ms(wall: float) -> int:
    return int(wall * 1000)


class TaskRecord:
    """Mutable server-side record of one task; the server guards it with its lock.

    The state is derived from the server's clock instead of being advanced by a thread:
    each of ``waiting``, ``queuing`` and ``generating`` lasts a third of ``duration``, then
    the task takes its planned ending unless :meth:`force` ended it earlier.
    """

    def __init__(
        self,
        *,
        flux_task_id: str,
        body: Mapping[str, object],
        model: str,
        input: Mapping[str, object],
        callback_url: str | None,
        duration: float,
        started: float,
        created_at: float,
        ending: Ending,
    ) -> None:
        """Create a running task that started at clock time ``started``."""
        self.flux_task_id = flux_task_id
        self.model = model
        self.input = input
        self.callback_url = callback_url
        self.duration = duration
        self.started = started
        self.created_at = created_at
        self.param = json.dumps(body)
        self.callback_due = False
        self._planned = ending
        self._forced: _Terminal | None = None

    def _elapsed(self, now: float) -> float:
        # An injected clock may go backwards; never report a negative age.
        return max(0.0, now - self.started)

    def terminal(self, now: float) -> _Terminal | None:
        """How and when the task ended, or ``None`` if it is still running at ``now``."""
        if self._forced is not None:
            return self._forced
        if self._elapsed(now) >= self.duration:
            return _Terminal(self._planned, self.duration, self.created_at + self.duration)
        return None

    def state(self, now: float) -> TaskState:
        """The task's state at clock time ``now``."""
        return self._state_and_update(now)[0]

    def _state_and_update(self, now: float) -> tuple[TaskState, float]:
        """The state at ``now`` and the wall time the task entered it."""
        ended = self.terminal(now)
        if ended is not None:
            return ended.ending.state, ended.completed_at
        third = self.duration / 3
        phase = min(int(self._elapsed(now) / third), len(_RUNNING_STATES) - 1)
        return _RUNNING_STATES[phase], self.created_at + phase * third

    def force(self, ending: Ending, *, now: float, wall: float) -> None:
        """End the running task now with ``ending``."""
        self._forced = _Terminal(ending, self._elapsed(now), wall)

    def snapshot(self, now: float) -> FakeTask:
        """A read-only copy of the task as of clock time ``now``."""
        ended = self.terminal(now)
        ending = ended.ending if ended is not None else SUCCESS
        return FakeTask(
            flux_task_id=self.flux_task_id,
            model=self.model,
            input=copy.deepcopy(dict(self.input)),
            callback_url=self.callback_url,
            state=self.state(now),
            duration=self.duration,
            created_at=self.created_at,
            completed_at=ended.completed_at if ended is not None else None,
            fail_code=ending.fail_code,
            fail_msg=ending.fail_msg,
        )

    def result_url(self, base_url: str) -> str:
        """URL of the task's single result image."""
        return f"{base_url}/files/{self.flux_task_id}/0.png"

    def record_info(self, now: float, base_url: str) -> dict[str, object]:
        """The ``data`` object of a ``recordInfo`` answer at clock time ``now``."""
        state, updated_at = self._state_and_update(now)
        ended = self.terminal(now)
        result_json = ""
        fail_code = fail_msg = ""
        cost_time = 0
        complete_time: int | None = None
        if ended is not None:
            fail_code, fail_msg = ended.ending.fail_code, ended.ending.fail_msg
            cost_time = round(ended.elapsed)
            complete_time = _ms(ended.completed_at)
            if ended.ending.state == "success":
                result_json = json.dumps({"resultUrls": [self.result_url(base_url)]})
        return {
            "taskId": self.flux_task_id,
            "model": self.model,
            "state": state,
            "param": self.param,
            "resultJson": result_json,
            "failCode": fail_code,
            "failMsg": fail_msg,
            "costTime": cost_time,
            "completeTime": complete_time,
            "createTime": _ms(self.created_at),
            "updateTime": _ms(updated_at),
        }
