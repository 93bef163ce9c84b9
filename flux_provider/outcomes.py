"""How a finished wait becomes a task outcome: a result dict, a retry or a hard failure.

Shared by the operator and the sensor. Retryable failures raise an ordinary
exception so the task's ``retries`` apply; hopeless ones raise
``AirflowFailException`` so no credits are burnt on retries that cannot help.
The task log says which, and why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from flux_provider.errors import FluxError, TaskTimeoutError, generation_failure
from flux_provider.models import TaskInfo, TaskState
from flux_provider.triggers import EVENT_STATUSES


class FluxTaskError(AirflowException):
    """A retryable failure: Airflow's ``retries`` apply."""


def fail(error: FluxError, log: logging.Logger | Any) -> NoReturn:
    """Raise the Airflow exception that matches ``error``'s retryability, logging why."""
    if error.retryable:
        log.error("Retryable failure (Airflow's retries apply): %s", error)
        raise FluxTaskError(str(error)) from error
    log.error("Failing without retry (a retry cannot help): %s", error)
    raise AirflowFailException(str(error)) from error


def result_from_info(info: TaskInfo, log: logging.Logger | Any) -> dict[str, Any]:
    """The result dict of a task that ended; raises if it failed."""
    failure = info.failure()
    if failure is not None:
        fail(failure, log)
    if info.state is not TaskState.SUCCESS:
        raise AirflowException(f"flux task {info.flux_task_id} has not ended: {info.raw_state}")
    log.info(
        "Flux task %s succeeded in %ss with %d image(s)",
        info.flux_task_id,
        info.cost_time,
        len(info.result_urls),
    )
    return info.summary()


def result_from_event(event: Mapping[str, Any] | None, log: logging.Logger | Any) -> dict[str, Any]:
    """Validate a trigger event and turn it into the result dict, or raise."""
    if not isinstance(event, Mapping):
        raise AirflowException(f"the trigger sent no usable event: {event!r}")
    status = event.get("status")
    flux_task_id = event.get("flux_task_id")
    if status not in EVENT_STATUSES or not isinstance(flux_task_id, str):
        raise AirflowException(f"the trigger sent an unknown event: {dict(event)!r}")
    log.info(
        "Flux task %s ended with %s after %.1fs and %s polls in the triggerer",
        flux_task_id,
        status,
        float(event.get("elapsed") or 0.0),
        event.get("polls"),
    )
    if status == "success":
        return TaskInfo.model_validate(_wire(event["task"])).summary()
    message = str(event.get("message") or status)
    if status == "failed":
        task = event.get("task") or {}
        fail(
            generation_failure(
                task.get("fail_code"), task.get("fail_msg"), flux_task_id=flux_task_id
            ),
            log,
        )
    if status == "timeout":
        fail(TaskTimeoutError(message, flux_task_id=flux_task_id), log)
    fail(
        FluxError(
            message,
            flux_task_id=flux_task_id,
            status_code=event.get("status_code"),
            retryable=bool(event.get("retryable")),
        ),
        log,
    )


def _wire(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A task summary back in wire shape, so events are parsed by the same model."""
    return {
        "taskId": summary["flux_task_id"],
        "state": summary.get("raw_state") or summary["state"],
        "resultJson": {"resultUrls": summary.get("result_urls") or []},
        "failCode": summary.get("fail_code"),
        "failMsg": summary.get("fail_msg"),
        "costTime": summary.get("cost_time"),
        "createTime": summary.get("create_time"),
        "completeTime": summary.get("complete_time"),
        "updateTime": summary.get("update_time"),
    }
