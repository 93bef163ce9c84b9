"""``FluxWaitMixin``: waiting for a submitted task and turning its end into the task's result.

Shared by the operator and the sensor: check the task once (a task that
already ended never defers), then defer to the triggerer or poll on the
worker, then deliver the result dict or raise the matching Airflow failure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from flux_provider.api.errors import FluxError, NotFoundError
from flux_provider.api.formatting import count_text, credits_text, seconds_text
from flux_provider.api.models import TaskInfo
from flux_provider.api.polling import log_progress
from flux_provider.hooks import FluxHook
from flux_provider.links.result import persist_result_link
from flux_provider.operators.failures import fail, failing_the_task
from flux_provider.triggers import FluxTaskTrigger
from flux_provider.triggers.events import MalformedEventError, TaskEvent

if TYPE_CHECKING:
    from airflow.sdk import Context


def result_link_target(result: Mapping[str, Any]) -> str | None:
    """The first stored copy when it is browsable over http(s), else the first result URL."""
    stored = [s["location"] for s in result.get("stored") or []]
    browsable = [loc for loc in stored if loc.startswith(("http://", "https://"))]
    urls = browsable or list(result.get("result_urls") or [])
    return urls[0] if urls else None


class FluxWaitMixin:
    """Wait for a submitted task (check once, then defer or poll) and deliver its result."""

    flux_conn_id: str
    deferrable: bool
    poll_interval: float | None
    timeout: float
    max_consecutive_errors: int
    execution_timeout: timedelta | None
    log: Any
    flux_result: dict[str, Any] | None = None
    """The result this instance delivered, once it has (its lineage events read it)."""

    def keep_wait_settings(
        self,
        flux_conn_id: str,
        deferrable: bool,
        poll_interval: float | None,
        timeout: float,
        max_consecutive_errors: int,
    ) -> None:
        """Check each wait setting (when the DAG is parsed) and keep it on the task."""
        if poll_interval is not None and not poll_interval > 0:
            raise ValueError(
                f"poll_interval must be > 0 seconds (or None for adaptive), got {poll_interval}"
            )
        self.poll_interval = poll_interval
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        if max_consecutive_errors < 0:
            raise ValueError(f"max_consecutive_errors must be >= 0, got {max_consecutive_errors}")
        self.max_consecutive_errors = max_consecutive_errors
        self.flux_conn_id = flux_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> FluxHook:
        """The hook for ``flux_conn_id``."""
        return FluxHook(flux_conn_id=self.flux_conn_id)

    def check_connection(self) -> None:
        """Build the client now: a misconfigured connection fails at once, without retries.

        Reading the connection also registers the key with the secrets masker
        in this process (a resumed task would otherwise never read it).
        """
        try:
            self.hook.client  # noqa: B018
        except ValueError as exc:
            self.log.error("Failing without retry (a retry cannot help): %s", exc)
            raise AirflowFailException(str(exc)) from None

    def wait_for_result(
        self, context: Context, flux_task_id: str, info: TaskInfo | None = None
    ) -> dict[str, Any]:
        """Deliver the result if the task already ended; otherwise defer or block until it does."""
        if info is None:
            info = self._peek(flux_task_id)
        if info is not None and info.state.is_terminal:
            self.log.info(
                "Flux task %s has already ended (%s): not waiting", flux_task_id, info.raw_state
            )
            return self.deliver(context, info)
        if self.deferrable:
            deadline, deadline_name = self._deadline(context)
            self.log.info("Deferring: polling flux task %s in the triggerer", flux_task_id)
            self.defer(  # type: ignore[attr-defined]
                trigger=FluxTaskTrigger(
                    flux_task_id,
                    self.flux_conn_id,
                    deadline=deadline,
                    deadline_name=deadline_name,
                    poll_interval=self.poll_interval,
                    max_consecutive_errors=self.max_consecutive_errors,
                ),
                method_name="execute_complete",
                timeout=None,
            )
        with failing_the_task(self.log):
            final = self.hook.client.wait_for_task(
                flux_task_id,
                poll_interval=self.poll_interval,
                timeout=self.timeout,
                on_poll=partial(log_progress, self.log),
            )
        return self.deliver(context, final)

    def execute_complete(
        self, context: Context, event: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume after the trigger fired: read the event, then deliver or fail."""
        self.check_connection()
        try:
            ended = TaskEvent.parse(event)
        except MalformedEventError as exc:
            raise AirflowException(str(exc)) from None
        self.log.info(
            "Flux task %s ended with %s after %s and %s in the triggerer",
            ended.flux_task_id,
            ended.status,
            seconds_text(ended.elapsed),
            count_text(ended.polls, "poll"),
        )
        if ended.task is None:
            error = ended.error()
            assert error is not None  # an event without a task always stands for an error
            fail(error, self.log)
        return self.deliver(context, ended.task)

    def deliver(self, context: Context, info: TaskInfo) -> dict[str, Any]:
        """The result dict of an ended task (after :meth:`add_outputs`); raises if it failed."""
        failure = info.failure()
        if failure is not None:
            fail(failure, self.log)
        result = self.add_outputs(context, info.summary())
        self.flux_result = result
        persist_result_link(context, result_link_target(result))
        cost = "not reported" if info.credits is None else f"{credits_text(info.credits)} credits"
        self.log.info(
            "Flux task %s done: %s, cost %s, %s",
            info.flux_task_id,
            count_text(len(info.result_urls), "image"),
            cost,
            "duration not reported" if info.duration_s is None else seconds_text(info.duration_s),
        )
        return result

    def add_outputs(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        """Add what the task made beyond the API's answer (the operator stores images)."""
        return result

    def _deadline(self, context: Context) -> tuple[float, str]:
        """The trigger's deadline: ``timeout`` from now, or the end of ``execution_timeout``.

        Airflow does not enforce ``execution_timeout`` while a task is deferred,
        so the trigger does, from the try's start.
        """
        deadline = time.time() + self.timeout
        started = getattr(context.get("ti"), "start_date", None)
        if self.execution_timeout is not None and started is not None:
            ends = started.timestamp() + self.execution_timeout.total_seconds()
            if ends < deadline:
                return ends, "execution_timeout"
        return deadline, "timeout"

    def look_up(self, flux_task_id: str, *, retry: bool) -> TaskInfo | FluxError:
        """One read of the task: its info, or the transient error that prevented it (a 404
        included); a hopeless error fails the Airflow task at once."""
        try:
            return self.hook.client.get_task(flux_task_id, retry=retry)
        except FluxError as error:
            if not (error.retryable or isinstance(error, NotFoundError)):
                fail(error, self.log)
            return error

    def _peek(self, flux_task_id: str) -> TaskInfo | None:
        """One poll without retries; ``None`` if it could not tell (the wait copes)."""
        seen = self.look_up(flux_task_id, retry=False)
        if isinstance(seen, NotFoundError):
            self.log.info("Flux task %s is not visible yet (%s)", flux_task_id, seen)
        elif isinstance(seen, FluxError):
            self.log.warning(
                "Checking flux task %s failed (%s); waiting anyway", flux_task_id, seen
            )
        return seen if isinstance(seen, TaskInfo) else None
