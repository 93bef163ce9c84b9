"""``FluxTaskSensor``: waits for a FLUX task submitted elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from flux_provider.client import DEFAULT_WAIT_TIMEOUT
from flux_provider.errors import FluxError
from flux_provider.hooks import FluxHook
from flux_provider.links import FluxResultLink
from flux_provider.operators import FluxWaitMixin, check_wait_settings
from flux_provider.outcomes import fail
from flux_provider.polling import DEFAULT_MAX_CONSECUTIVE_ERRORS


class FluxTaskSensor(FluxWaitMixin, BaseSensorOperator):
    """Wait for ``flux_task_id`` to end; succeed with its result, fail like the operator.

    Deferrable (the default follows ``[operators] default_deferrable``): checks
    once, then polls in the triggerer. Otherwise pokes every ``poke_interval``
    seconds (``mode="reschedule"`` frees the slot between pokes); a transient
    poll error counts as "not yet" until ``max_consecutive_errors`` in a row.

    :param flux_task_id: the API's task id (templated).
    :param flux_conn_id: the Airflow connection (type ``flux``).
    :param deferrable: poll in the triggerer.
    :param poll_interval: the triggerer's fixed interval; ``None`` = adaptive.
    :param timeout: seconds before giving up (retryable failure).
    :param max_consecutive_errors: transient poll failures in a row tolerated.
    """

    template_fields: Sequence[str] = ("flux_task_id",)
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
        check_wait_settings(poll_interval, timeout, max_consecutive_errors)
        super().__init__(timeout=timeout, poke_interval=poke_interval, **kwargs)
        self.flux_task_id = flux_task_id
        self.flux_conn_id = flux_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_consecutive_errors = max_consecutive_errors
        self._errors_in_a_row = 0

    def execute(self, context: Any) -> Any:
        """Defer (deferrable) or run the poke loop."""
        self.check_connection()
        if self.deferrable:
            return self.wait_and_finish(context, self.flux_task_id)
        return super().execute(context)

    def poke(self, context: Any) -> bool | PokeReturnValue:
        """One poll: done with the result when the task ended; raises if it failed."""
        try:
            info = self.hook.get_task(self.flux_task_id)
        except FluxError as error:
            self._errors_in_a_row += 1
            if not error.retryable or self._errors_in_a_row > self.max_consecutive_errors:
                fail(error, self.log)
            self.log.warning("Poll failed (%s); %d in a row", error, self._errors_in_a_row)
            return False
        self._errors_in_a_row = 0
        if not info.state.is_terminal:
            self.log.info("Flux task %s is %s", self.flux_task_id, info.raw_state)
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.finish(context, info))
