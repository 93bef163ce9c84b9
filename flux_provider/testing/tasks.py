"""Fake generation tasks: their status walk over time, their cost and their ``TaskInfo`` data."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .shapes import FakeTaskStatus, WireStyle
from .wire import MODEL

__all__ = ["PROVIDER", "Ending", "FakeTask", "TaskRecord"]

PROVIDER = "Black Forest Labs"
"""``data.provider`` of every task."""


@dataclass(frozen=True)
class FakeTask:
    """Snapshot of one task held by the fake API.

    Attributes:
        flux_task_id: The ``task_id`` the API returned.
        model: Model named in the create request.
        input: The request's ``input`` object (a copy).
        callback_url: The request's ``callback_url``, or ``None``.
        status: Canonical status when the snapshot was taken (whatever ``status_words`` sends).
        duration: Seconds the task takes to end on its own.
        created_at: Wall time (``time.time()``) the task was created.
        completed_at: Wall time the task ended, or ``None`` while it runs. For a task that
            ended on its own this is ``created_at + duration``; for one ended by
            ``complete()``/``fail()`` it is the time of that call.
        fail_code: Code of a failed task (e.g. 501), else ``None``.
        fail_message: Reason of a failed task, else ``None``.
        credits: ``data.credits`` as ``TaskInfo`` sends it: ``None`` while running, the cost
            on success, 0 on failure.
    """

    flux_task_id: str
    model: str
    input: Mapping[str, object]
    callback_url: str | None
    status: FakeTaskStatus
    duration: float
    created_at: float
    completed_at: float | None
    fail_code: int | None
    fail_message: str | None
    credits: float | None


@dataclass(frozen=True)
class Ending:
    """How a task ends: in ``success``, or ``failed`` with a code and message."""

    status: Literal["success", "failed"]
    code: int | None = None
    message: str | None = None


SUCCESS = Ending("success")


@dataclass(frozen=True)
class Terminal:
    """How and when a task ended."""

    ending: Ending
    elapsed: float  # clock seconds from creation to the end
    completed_at: float  # wall time


@dataclass(eq=False)
class TaskRecord:
    """Mutable server-side record of one task; the server guards it with its lock.

    The status is derived from the server's clock instead of being advanced by a thread:
    ``pending`` for the first third of ``duration``, ``running`` for the rest, then the
    ``planned`` ending unless :meth:`force` ended the task earlier.
    """

    flux_task_id: str
    model: str
    input: Mapping[str, object]
    callback_url: str | None
    duration: float
    started: float  # clock time of creation
    created_at: float  # wall time of creation
    planned: Ending
    cost: float
    charged: bool  # whether creating it took credits (a task made by submit() did not)
    callback_due: bool = field(default=False, init=False)
    _forced: Terminal | None = field(default=None, init=False)

    @property
    def may_fail(self) -> bool:
        """Whether the task is planned to fail (so a refund may come due)."""
        return self.planned.status == "failed"

    def _elapsed(self, now: float) -> float:
        # An injected clock may go backwards; never report a negative age.
        return max(0.0, now - self.started)

    def terminal(self, now: float) -> Terminal | None:
        """How and when the task ended, or ``None`` if it is still running at ``now``."""
        if self._forced is not None:
            return self._forced
        if self._elapsed(now) >= self.duration:
            return Terminal(self.planned, self.duration, self.created_at + self.duration)
        return None

    def status(self, now: float) -> FakeTaskStatus:
        """The task's canonical status at clock time ``now``."""
        ended = self.terminal(now)
        if ended is not None:
            return ended.ending.status
        return "pending" if self._elapsed(now) < self.duration / 3 else "running"

    def force(self, ending: Ending, *, now: float, wall: float) -> None:
        """End the running task now with ``ending``."""
        self._forced = Terminal(ending, self._elapsed(now), wall)

    def _credits(self, ended: Terminal | None) -> float | None:
        if ended is None:
            return None
        return self.cost if ended.ending.status == "success" else 0.0

    def snapshot(self, now: float) -> FakeTask:
        """A read-only copy of the task as of clock time ``now``."""
        ended = self.terminal(now)
        ending = ended.ending if ended is not None else SUCCESS
        return FakeTask(
            flux_task_id=self.flux_task_id,
            model=self.model,
            input=copy.deepcopy(dict(self.input)),
            callback_url=self.callback_url,
            status=self.status(now),
            duration=self.duration,
            created_at=self.created_at,
            completed_at=ended.completed_at if ended is not None else None,
            fail_code=ending.code,
            fail_message=ending.message,
            credits=self._credits(ended),
        )

    def result_url(self, base_url: str) -> str:
        """URL of the task's single result image."""
        return f"{base_url}/files/{self.flux_task_id}/0.png"

    def task_info(self, now: float, base_url: str, style: WireStyle) -> dict[str, object]:
        """The ``data`` object of a ``TaskInfo`` answer at clock time ``now``."""
        ended = self.terminal(now)
        data: dict[str, object] = {
            "task_id": self.flux_task_id,
            "provider": PROVIDER,
            "model_version": MODEL,
            "status": style.word(self.status(now)),
            "param": {
                "model": self.model,
                "callback_url": self.callback_url,
                "input": copy.deepcopy(dict(self.input)),
            },
            "create_at": int(self.created_at),
            "result": None,
            "duration_s": None,
            "complete_at": None,
            "credits": self._credits(ended),
            "source": "api",
        }
        if ended is None:
            return data
        data["duration_s"] = round(ended.elapsed, 3)
        data["complete_at"] = int(ended.completed_at)
        ending = ended.ending
        if ending.status == "success":
            data.update(style.success_fields(self.result_url(base_url)))
        else:
            data.update(style.failure_fields(ending.code or 0, ending.message or ""))
        return data
