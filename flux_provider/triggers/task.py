"""``FluxTaskTrigger``: polls one FLUX task from the triggerer, freeing the worker slot.

The trigger only reads (idempotent GETs), so a triggerer restart that
re-creates it from its kwargs simply resumes polling the same task. Every
trigger of one connection shares one pooled client in the triggerer
(``FluxHook.async_client``), and the first poll comes after a random part of
the first interval, spreading triggers that start together. Its kwargs
are plain primitives: the connection id (never the key), the task id, the
poll interval, an absolute wall-clock deadline (and which limit set it) and
the error tolerance.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from flux_provider.api.errors import FluxError
from flux_provider.api.polling import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    PollSchedule,
    TaskWait,
    log_progress,
)
from flux_provider.hooks import FluxHook
from flux_provider.triggers.events import TaskEvent


class FluxTaskTrigger(BaseTrigger):
    """Polls ``flux_task_id`` until it ends, the deadline passes or polling keeps failing.

    Yields exactly one event (see :class:`~flux_provider.triggers.events.TaskEvent`)
    whose ``status`` is ``success`` (with the task summary), ``failed`` (with
    the failure and ``retryable``), ``timeout`` or ``error``.

    :param flux_task_id: the API's task id.
    :param flux_conn_id: the Airflow connection to poll with.
    :param deadline: absolute ``time.time()`` after which the wait ends with ``timeout``.
    :param poll_interval: fixed seconds between polls, or ``None`` for the adaptive schedule.
    :param max_consecutive_errors: transient poll failures in a row absorbed before giving up.
    :param deadline_name: the limit the deadline comes from (``timeout`` or
        ``execution_timeout``), named in the timeout message.
    """

    def __init__(
        self,
        flux_task_id: str,
        flux_conn_id: str = FluxHook.default_conn_name,
        *,
        deadline: float,
        poll_interval: float | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        deadline_name: str = "timeout",
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.flux_task_id = flux_task_id
        self.flux_conn_id = flux_conn_id
        self.deadline = float(deadline)
        self.poll_interval = None if poll_interval is None else float(poll_interval)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.deadline_name = str(deadline_name)

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
                "deadline_name": self.deadline_name,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the task ends; yield one event."""
        wait = TaskWait(
            self.flux_task_id,
            deadline=self.deadline,
            deadline_name=self.deadline_name,
            schedule=PollSchedule.from_interval(self.poll_interval),
            max_consecutive_errors=self.max_consecutive_errors,
        )
        # The operator polled just before deferring, so the first poll may wait a random part
        # of the first interval. Waiting before the connection is read spreads that start-up
        # work too when many triggers start at once (a mapped batch, a triggerer restart).
        await asyncio.sleep(wait.clamp(random.uniform(0.0, wait.schedule.interval(1))))
        try:
            info = await FluxHook(flux_conn_id=self.flux_conn_id).afollow_task(
                wait, on_poll=partial(log_progress, self.log)
            )
            event = TaskEvent.from_info(info, wait)
        except FluxError as error:
            event = TaskEvent.from_error(self.flux_task_id, error, wait)
        yield TriggerEvent(event.to_payload())
