"""``FluxWaitMixin``: waiting for a submitted task and turning its end into the task's result.

Shared by the operator and the sensor: check the task once (a task that
already ended never defers), then defer to the triggerer or poll on the
worker, then deliver the typed result or raise the matching Airflow failure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException

from flux_provider.api.errors import FluxError, NotFoundError
from flux_provider.api.formatting import count_text, credits_text, seconds_text
from flux_provider.api.models import TaskInfo
from flux_provider.api.polling import WaitSettings, log_progress
from flux_provider.api.results import GenerationResult
from flux_provider.hooks import FluxHook
from flux_provider.links import persist_result_link
from flux_provider.metrics import FluxMetrics
from flux_provider.operators.failures import fail, failing_the_task
from flux_provider.triggers import FluxTaskTrigger
from flux_provider.triggers.events import MalformedEventError, TaskEvent

if TYPE_CHECKING:
    from airflow.sdk import Context


def result_link_target(result: GenerationResult) -> str | None:
    """The first stored copy when it is browsable over http(s), else the first result URL."""
    browsable = [loc for loc in result.locations if loc.startswith(("http://", "https://"))]
    urls = browsable or result.result_urls
    return urls[0] if urls else None


def wait_deadline(
    timeout: float, execution_timeout: timedelta | None, started: Any
) -> tuple[float, str]:
    """A deferred wait's absolute deadline and the limit it comes from.

    ``timeout`` from now, or the end of ``execution_timeout`` counted from the try's start
    (``started``, a datetime or ``None``) when that comes first: Airflow does not enforce
    ``execution_timeout`` while a task is deferred, so the trigger does.
    """
    deadline = time.time() + timeout
    if execution_timeout is not None and started is not None:
        ends = started.timestamp() + execution_timeout.total_seconds()
        if ends < deadline:
            return ends, "execution_timeout"
    return deadline, "timeout"


class FluxWaitMixin:
    """Wait for a submitted task (check once, then defer or poll) and deliver its result."""

    flux_conn_id: str
    deferrable: bool
    wait_settings: WaitSettings
    execution_timeout: timedelta | None
    log: Any
    flux_result: GenerationResult | None = None
    """The result this instance delivered, once it has (its lineage events read it)."""
    counts_generations: bool = True
    """Whether this task's generations go to the ``flux.*`` metrics (the sensor's were counted
    by whoever submitted them)."""

    def configure_wait(self, flux_conn_id: str, deferrable: bool, settings: WaitSettings) -> None:
        """Keep the connection, the mode and the (already checked) wait settings on the task;
        ``poll_interval`` and ``max_consecutive_errors`` stay readable as attributes."""
        self.flux_conn_id = flux_conn_id
        self.deferrable = deferrable
        self.wait_settings = settings
        self.poll_interval = settings.poll_interval
        self.max_consecutive_errors = settings.max_consecutive_errors

    @cached_property
    def hook(self) -> FluxHook:
        """The hook for ``flux_conn_id``."""
        return FluxHook(flux_conn_id=self.flux_conn_id)

    def check_connection(self) -> None:
        """Build the client now: a misconfigured connection fails at once, without retries.

        Reading the connection also registers the key with the secrets masker
        in this process (a resumed task would otherwise never read it).
        """
        with failing_the_task(self.log):
            self.hook.get_conn()

    def wait_for_result(
        self, context: Context, flux_task_id: str, info: TaskInfo | None = None
    ) -> dict[str, Any]:
        """Deliver the result if the task already ended; otherwise defer or block until it does."""
        if info is None:
            info = self._poll_once(flux_task_id)
        if info is not None and info.state.is_terminal:
            self.log.info(
                "Flux task %s has already ended (%s): not waiting", flux_task_id, info.raw_state
            )
            return self.deliver(context, info)
        if self.deferrable:
            self._defer_wait(context, flux_task_id)
        with failing_the_task(self.log):
            final = self.hook.wait_for_task(
                flux_task_id,
                poll_interval=self.wait_settings.poll_interval,
                timeout=self.wait_settings.timeout,
                on_poll=partial(log_progress, self.log),
            )
        return self.deliver(context, final)

    def _defer_wait(self, context: Context, flux_task_id: str) -> None:
        deadline, deadline_name = wait_deadline(
            self.wait_settings.timeout,
            self.execution_timeout,
            getattr(context.get("ti"), "start_date", None),
        )
        self.log.info("Deferring: polling flux task %s in the triggerer", flux_task_id)
        self.defer(  # type: ignore[attr-defined]
            trigger=FluxTaskTrigger(
                flux_task_id,
                self.flux_conn_id,
                deadline=deadline,
                deadline_name=deadline_name,
                poll_interval=self.wait_settings.poll_interval,
                max_consecutive_errors=self.wait_settings.max_consecutive_errors,
            ),
            method_name="execute_complete",
            timeout=None,
        )

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
            if self.counts_generations:
                FluxMetrics.of(context).failed(error)
            fail(error, self.log)
        return self.deliver(context, ended.task)

    def deliver(self, context: Context, info: TaskInfo) -> dict[str, Any]:
        """The XCom value of an ended task (built by :meth:`build_result`); raises if it failed."""
        if self.counts_generations:
            FluxMetrics.of(context).ended(info)
        failure = info.failure()
        if failure is not None:
            fail(failure, self.log)
        result = self.build_result(context, info)
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
        return result.to_xcom()

    def build_result(self, context: Context, info: TaskInfo) -> GenerationResult:
        """The result of an ended task (the operator adds what it asked and what it stored)."""
        return GenerationResult(task=info)

    def read_task(self, flux_task_id: str, *, retry: bool) -> TaskInfo | FluxError:
        """One read of the task: its info, or the transient error that prevented it (a 404
        included); a hopeless error fails the Airflow task at once."""
        try:
            return self.hook.get_task(flux_task_id, retry=retry)
        except FluxError as error:
            if not (error.retryable or isinstance(error, NotFoundError)):
                fail(error, self.log)
            return error

    def _poll_once(self, flux_task_id: str) -> TaskInfo | None:
        """One poll without retries; ``None`` if it could not tell (the wait copes)."""
        seen = self.read_task(flux_task_id, retry=False)
        if isinstance(seen, NotFoundError):
            self.log.info("Flux task %s is not visible yet (%s)", flux_task_id, seen)
        elif isinstance(seen, FluxError):
            self.log.warning(
                "Checking flux task %s failed (%s); waiting anyway", flux_task_id, seen
            )
        return seen if isinstance(seen, TaskInfo) else None
