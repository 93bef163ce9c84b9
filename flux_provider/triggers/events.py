"""The triggers' events: how a wait or a batch's try ended, the only place that knows their keys.

:class:`TaskEvent` (``FluxTaskTrigger``): the trigger builds it from the final task info
(:meth:`TaskEvent.from_info`) or from the error that ended the wait
(:meth:`TaskEvent.from_error`) and sends :meth:`TaskEvent.to_payload`; the operator reads it
back with :meth:`TaskEvent.parse`. :class:`BatchEvent` (``FluxBatchTrigger``) is the same for a
batch: its status and counts, the items themselves stay in the batch's journal. No Airflow
imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from pydantic import ValidationError

from flux_provider.api.batch import BatchCounts, BatchEnd
from flux_provider.api.errors import FluxError, TaskTimeoutError
from flux_provider.api.models import TaskInfo, TaskState
from flux_provider.api.polling import TaskWait

EventStatus = Literal["success", "failed", "timeout", "error"]
"""``success`` / ``failed``: the task ended; ``timeout``: the deadline passed while it ran;
``error``: polling could not go on (a hopeless or repeated error, a misconfigured connection)."""

EVENT_STATUSES: tuple[str, ...] = get_args(EventStatus)


class MalformedEventError(ValueError):
    """A payload that is not an event this module wrote."""


@dataclass(frozen=True)
class TaskEvent:
    """How one wait for one task ended."""

    status: EventStatus
    flux_task_id: str
    task: TaskInfo | None = None
    """The final info (``success`` and ``failed``)."""
    message: str | None = None
    retryable: bool = False
    error_type: str | None = None
    status_code: int | None = None
    elapsed: float = 0.0
    polls: int = 0
    last_state: str | None = None

    @classmethod
    def from_info(cls, info: TaskInfo, wait: TaskWait | None = None) -> TaskEvent:
        """The event of a task that ended (``success`` or ``failed``)."""
        failure = info.failure() if info.state is TaskState.FAILED else None
        return cls(
            status="success" if info.state is TaskState.SUCCESS else "failed",
            flux_task_id=info.flux_task_id,
            task=info,
            message=str(failure) if failure is not None else None,
            retryable=failure.retryable if failure is not None else False,
            **_progress(wait),
        )

    @classmethod
    def from_error(
        cls, flux_task_id: str, error: FluxError, wait: TaskWait | None = None
    ) -> TaskEvent:
        """The event of a wait that ended with ``error`` (a timeout is its own status)."""
        return cls(
            status="timeout" if isinstance(error, TaskTimeoutError) else "error",
            flux_task_id=flux_task_id,
            message=str(error),
            retryable=error.retryable,
            error_type=type(error).__name__,
            status_code=error.status_code,
            **_progress(wait),
        )

    def to_payload(self) -> dict[str, Any]:
        """The JSON-serialisable payload of the ``TriggerEvent``."""
        return {
            "status": self.status,
            "flux_task_id": self.flux_task_id,
            "task": self.task.summary() if self.task is not None else None,
            "message": self.message,
            "retryable": self.retryable,
            "error_type": self.error_type,
            "status_code": self.status_code,
            "elapsed": self.elapsed,
            "polls": self.polls,
            "last_state": self.last_state,
        }

    @classmethod
    def parse(cls, payload: object) -> TaskEvent:
        """Read a payload back; raises :class:`MalformedEventError` if it is not one."""
        if not isinstance(payload, Mapping):
            raise MalformedEventError(f"the trigger sent no usable event: {payload!r}")
        status = payload.get("status")
        flux_task_id = payload.get("flux_task_id")
        if status not in EVENT_STATUSES or not isinstance(flux_task_id, str):
            raise MalformedEventError(f"the trigger sent an unknown event: {dict(payload)!r}")
        task = payload.get("task")
        try:
            info = TaskInfo.model_validate(task) if task is not None else None
        except ValidationError as exc:
            raise MalformedEventError(f"the trigger's event holds no usable task: {exc}") from None
        if status in ("success", "failed") and info is None:
            raise MalformedEventError(f"a {status} event must carry the task: {dict(payload)!r}")
        status_code = payload.get("status_code")
        return cls(
            status=status,
            flux_task_id=flux_task_id,
            task=info,
            message=_text(payload.get("message")),
            retryable=bool(payload.get("retryable")),
            error_type=_text(payload.get("error_type")),
            status_code=status_code if isinstance(status_code, int) else None,
            elapsed=float(payload.get("elapsed") or 0.0),
            polls=int(payload.get("polls") or 0),
            last_state=_text(payload.get("last_state")),
        )

    def error(self) -> FluxError | None:
        """The error this event stands for, or ``None`` for a success with images."""
        if self.task is not None:
            return self.task.failure()
        # The message is the original error's text, which already names the task and code.
        message = self.message or f"the wait for flux task {self.flux_task_id} ended: {self.status}"
        if self.status == "timeout":
            return TaskTimeoutError(message)
        return FluxError(message, retryable=self.retryable)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _progress(wait: TaskWait | None) -> dict[str, Any]:
    if wait is None:
        return {}
    return {"elapsed": wait.elapsed, "polls": wait.polls, "last_state": wait.last_raw_state}


BatchStatus = Literal["ended", "timeout", "error", "superseded"]
BATCH_STATUSES: tuple[str, ...] = get_args(BatchStatus)


@dataclass(frozen=True)
class BatchEvent:
    """How one try of a batch ended in the triggerer (see
    :class:`~flux_provider.api.batch.runner.BatchEnd`)."""

    status: BatchStatus
    message: str | None = None
    retryable: bool = True
    counts: BatchCounts | None = None

    @classmethod
    def from_end(cls, end: BatchEnd) -> BatchEvent:
        """The event of a try that ran to an end."""
        return cls(end.status, end.message, end.retryable, end.counts)

    @classmethod
    def from_error(cls, error: FluxError) -> BatchEvent:
        """The event of a try that could not run (the connection, the journal)."""
        return cls("error", str(error), error.retryable)

    def to_payload(self) -> dict[str, Any]:
        """The JSON-serialisable payload of the ``TriggerEvent``."""
        return {
            "kind": "batch",
            "status": self.status,
            "message": self.message,
            "retryable": self.retryable,
            "counts": None if self.counts is None else asdict(self.counts),
        }

    @classmethod
    def parse(cls, payload: object) -> BatchEvent:
        """Read a payload back; raises :class:`MalformedEventError` if it is not one."""
        if not isinstance(payload, Mapping) or payload.get("kind") != "batch":
            raise MalformedEventError(f"the batch trigger sent no usable event: {payload!r}")
        status = payload.get("status")
        if status not in BATCH_STATUSES:
            raise MalformedEventError(f"the batch trigger sent an unknown event: {payload!r}")
        counts = payload.get("counts")
        try:
            parsed = BatchCounts(**counts) if isinstance(counts, Mapping) else None
        except TypeError:
            raise MalformedEventError(
                f"the batch event's counts are unusable: {counts!r}"
            ) from None
        return cls(status, _text(payload.get("message")), bool(payload.get("retryable")), parsed)
