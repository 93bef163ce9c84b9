"""``FluxTaskSensor``: waits for a FLUX task submitted elsewhere."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from flux_provider.api.config import DEFAULT_WAIT_TIMEOUT
from flux_provider.api.errors import FluxError
from flux_provider.api.polling import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    PollOutcome,
    TaskWait,
    WaitSettings,
    log_progress,
)
from flux_provider.hooks import FluxHook
from flux_provider.links import FluxResultLink
from flux_provider.operators.failures import fail
from flux_provider.operators.waiting import FluxWaitMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from flux_provider.lineage.openlineage import Lineage

WAIT_STATE_KEY = "flux_sensor_wait"
"""Key in ``task_state_store`` of the poll counters that must survive a reschedule."""


class FluxTaskSensor(FluxWaitMixin, BaseSensorOperator):
    """Wait for ``flux_task_id`` to end; succeed with its result, fail like the operator.

    Deferrable (the default follows ``[operators] default_deferrable``): checks
    once, then polls in the triggerer. Otherwise pokes every ``poke_interval``
    seconds (``mode="reschedule"`` frees the slot between pokes). Each poke is
    one step of the same wait the operator runs: a 404 right after submission
    is tolerated for a few polls, a transient error counts as "not yet" until
    ``max_consecutive_errors`` in a row, and in reschedule mode those counts
    live in the task instance's ``task_state_store`` (Airflow 3.3+), so they
    survive between pokes.

    :param flux_task_id: the API's task id (templated).
    :param flux_conn_id: the Airflow connection (type ``flux``).
    :param deferrable: poll in the triggerer.
    :param poll_interval: the triggerer's fixed interval; ``None`` = adaptive.
    :param timeout: seconds before giving up (retryable failure).
    :param max_consecutive_errors: transient poll failures in a row tolerated.
    """

    template_fields: Sequence[str] = ("flux_task_id",)
    counts_generations = False
    operator_extra_links = (FluxResultLink(),)
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        flux_task_id: str,
        flux_conn_id: str = FluxHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        poke_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(timeout=timeout, poke_interval=poke_interval, **kwargs)
        self.configure_wait(
            flux_conn_id,
            deferrable,
            WaitSettings(poll_interval, timeout, max_consecutive_errors),
        )
        self.flux_task_id = flux_task_id
        self._wait: TaskWait | None = None

    def execute(self, context: Context) -> Any:
        """Defer (deferrable) or run the poke loop."""
        self.check_connection()
        if self.deferrable:
            return self.wait_for_result(context, self.flux_task_id)
        return super().execute(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One poll: done with the result when the task ended; raises if it failed."""
        wait = self._restore_wait(context)
        outcome: PollOutcome
        try:
            outcome = self.hook.get_task(self.flux_task_id, retry=False)
        except FluxError as error:
            outcome = error
        try:
            ended = wait.after_poll(outcome, partial(log_progress, self.log))
        except FluxError as error:
            fail(error, self.log)
        finally:
            self._save_wait(context, wait)
        if ended is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.deliver(context, ended))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """OpenLineage of the wait: the task's id and cost, its result URLs as outputs.

        ``None`` when ``apache-airflow-providers-openlineage`` is not installed.
        """
        try:
            from flux_provider.lineage import openlineage as lineage
        except ImportError:
            return None
        return lineage.generation_lineage(
            flux_task_id=self.flux_task_id,
            api_base_url=lineage.built_api_base_url(self),
            result=self.flux_result,
        )

    def _restore_wait(self, context: Context) -> TaskWait:
        """This try's wait: kept in memory between pokes, restored from the store after a
        reschedule (a new process per poke)."""
        if self._wait is None:
            # No deadline of its own: the sensor's ``timeout`` ends the pokes.
            self._wait = self.wait_settings.start(self.flux_task_id, deadline=math.inf)
            store = context.get("task_state_store")
            if store is not None and self.reschedule:
                self._wait.restore(store.get(WAIT_STATE_KEY))
            elif self.reschedule:
                self.log.warning(
                    "task_state_store is unavailable (Airflow < 3.3): in reschedule mode the "
                    "count of failed polls starts again at every poke"
                )
        return self._wait

    def _save_wait(self, context: Context, wait: TaskWait) -> None:
        store = context.get("task_state_store")
        if store is not None and self.reschedule:
            store.set(WAIT_STATE_KEY, wait.to_record())
