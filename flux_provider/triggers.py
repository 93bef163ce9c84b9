"""``FluxTaskTrigger``: polls one FLUX task from the triggerer, freeing the worker slot.

The trigger only reads (idempotent GETs), so a triggerer restart that
re-creates it from its kwargs simply resumes polling the same task. Its kwargs
are plain primitives: the connection id (never the key), the task id, the
poll interval, an absolute wall-clock deadline and the error tolerance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from flux_provider.client import AsyncFluxClient
from flux_provider.errors import FluxError, TaskTimeoutError
from flux_provider.hooks import FluxHook
from flux_provider.models import TaskInfo, TaskState
from flux_provider.polling import DEFAULT_MAX_CONSECUTIVE_ERRORS, PollSchedule, TaskWait

EVENT_STATUSES = ("success", "failed", "timeout", "error")


def error_event(flux_task_id: str, error: FluxError, **extra: Any) -> dict[str, Any]:
    """The payload describing a wait that ended with ``error``."""
    status = "timeout" if isinstance(error, TaskTimeoutError) else "error"
    return {
        "status": status,
        "flux_task_id": flux_task_id,
        "message": str(error),
        "retryable": error.retryable,
        "error_type": type(error).__name__,
        "status_code": error.status_code,
        **extra,
    }


def info_event(info: TaskInfo) -> dict[str, Any]:
    """The payload describing a task that ended (``success`` or ``failed``)."""
    payload: dict[str, Any] = {
        "status": "success" if info.state is TaskState.SUCCESS else "failed",
        "flux_task_id": info.flux_task_id,
        "task": info.summary(),
    }
    failure = info.failure()
    if failure is not None:
        payload.update(message=str(failure), retryable=failure.retryable)
    return payload


class FluxTaskTrigger(BaseTrigger):
    """Polls ``flux_task_id`` until it ends, the deadline passes or polling keeps failing.

    Yields exactly one event whose ``status`` is ``success`` (with the task
    summary), ``failed`` (with the fail code, message and ``retryable``),
    ``timeout`` or ``error``.

    :param flux_task_id: the API's task id.
    :param flux_conn_id: the Airflow connection to poll with.
    :param deadline: absolute ``time.time()`` after which the wait ends with ``timeout``.
    :param poll_interval: fixed seconds between polls, or ``None`` for the adaptive schedule.
    :param max_consecutive_errors: transient poll failures in a row absorbed before giving up.
    """

    def __init__(
        self,
        flux_task_id: str,
        flux_conn_id: str = FluxHook.default_conn_name,
        *,
        deadline: float,
        poll_interval: float | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.flux_task_id = flux_task_id
        self.flux_conn_id = flux_conn_id
        self.deadline = float(deadline)
        self.poll_interval = None if poll_interval is None else float(poll_interval)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self._client: AsyncFluxClient | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs: primitives only, no secret."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "flux_task_id": self.flux_task_id,
                "flux_conn_id": self.flux_conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the task ends; yield one event."""
        wait = TaskWait(
            self.flux_task_id,
            deadline=self.deadline,
            schedule=PollSchedule.from_interval(self.poll_interval),
            max_consecutive_errors=self.max_consecutive_errors,
        )
        try:
            hook = FluxHook(flux_conn_id=self.flux_conn_id)
            self._client = await hook.get_async_client()
            info = await self._poll_until_done(self._client, wait)
        except FluxError as error:
            last = wait.last_state.value if wait.last_state else None
            yield TriggerEvent(
                error_event(
                    self.flux_task_id,
                    error,
                    last_state=last,
                    elapsed=wait.elapsed,
                    polls=wait.polls,
                )
            )
        except ValueError as error:  # a misconfigured connection
            yield TriggerEvent(
                {
                    "status": "error",
                    "flux_task_id": self.flux_task_id,
                    "message": str(error),
                    "retryable": False,
                    "error_type": "ConnectionConfigError",
                }
            )
        else:
            yield TriggerEvent({**info_event(info), "elapsed": wait.elapsed, "polls": wait.polls})
        finally:
            await self.cleanup()

    async def _poll_until_done(self, client: AsyncFluxClient, wait: TaskWait) -> TaskInfo:
        wait.check_deadline()
        while True:
            try:
                info = await client.get_task(self.flux_task_id, retry=False)
            except FluxError as error:
                delay = wait.clamp(wait.record_error(error))
                self.log.warning(
                    "Poll %d of flux task %s failed (%s); %d in a row, retrying in %.1fs",
                    wait.polls,
                    self.flux_task_id,
                    error,
                    wait.errors_in_a_row,
                    delay,
                )
            else:
                if wait.record_info(info) is not None:
                    return info
                if wait.state_changed:
                    self.log.info(
                        "Flux task %s is %s after %.1fs (%d polls)",
                        self.flux_task_id,
                        info.raw_state,
                        wait.elapsed,
                        wait.polls,
                    )
                delay = wait.next_delay()
            wait.check_deadline()
            await asyncio.sleep(delay)

    async def cleanup(self) -> None:
        """Close the HTTP client (idempotent; also called by the triggerer on removal)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
