"""What carries a submitted task across Airflow tries: the task instance's ``task_state_store``.

Airflow 3.3 gives each task instance a store that outlives its tries (XCom is cleared when a
new try starts); below 3.3 there is none, and a retry cannot re-attach. A later try finds the
earlier try's task there and, when it may, re-attaches to it instead of paying again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flux_provider.api.errors import FluxError, NotFoundError
from flux_provider.api.models import TaskInfo, TaskState

STATE_KEY = "flux_task_id"
"""Key of the task id in ``task_state_store`` and XCom; renaming it breaks in-flight retries."""

REATTACHED_KEY = "flux_reattached"
"""XCom key of whether the try re-attached; it tells the resumed run after a deferral."""


def state_store(context: Any, log: Any, *, reattach: bool, warn: bool = True) -> Any:
    """The task instance's state store when re-attaching is on and Airflow has one.

    ``None`` otherwise; below Airflow 3.3 (no store) a warning says a retry will submit anew.
    """
    if not reattach:
        return None
    store = context.get("task_state_store")
    if store is None and warn:
        log.warning("task_state_store is unavailable: a retry will submit a new task")
    return store


def share_task_id(context: Any, flux_task_id: str, *, reattached: bool) -> None:
    """Push the try's task id, and whether it re-attached, to XCom for downstream tasks and for
    the run that resumes after a deferral."""
    context["ti"].xcom_push(key=STATE_KEY, value=flux_task_id)
    context["ti"].xcom_push(key=REATTACHED_KEY, value=reattached)


def pulled_reattached(context: Any, task_id: str, log: Any) -> bool:
    """Whether this try re-attached, as its first run recorded before deferring."""
    ti = context["ti"]
    try:
        pulled = ti.xcom_pull(task_ids=task_id, key=REATTACHED_KEY, map_indexes=ti.map_index)
    except Exception as error:
        # Only lineage reads it: never fail the task over it.
        log.warning("Could not read XCom %s (%s): assuming no re-attach", REATTACHED_KEY, error)
        return False
    return pulled is True


def earlier_task(
    store: Any, read_task: Callable[..., TaskInfo | FluxError], log: Any
) -> tuple[str, TaskInfo | None] | None:
    """The earlier try's task if it may be reused, with its info when known.

    Reused when it is still running or succeeded with images, and also when its state cannot
    be read right now (a transient error): re-attaching costs nothing, while submitting again
    could pay twice. ``None`` means submit. ``read_task(flux_task_id, retry=True)`` reads it.
    """
    if store is None:
        return None
    flux_task_id = store.get(STATE_KEY)
    if not isinstance(flux_task_id, str):
        return None
    info = read_task(flux_task_id, retry=True)
    if isinstance(info, NotFoundError):
        log.warning("Previous flux task %s is unknown: submitting anew", flux_task_id)
        return None
    if isinstance(info, FluxError):
        log.warning(
            "Previous flux task %s cannot be checked (%s): re-attaching", flux_task_id, info
        )
        return flux_task_id, None
    failure = info.failure()
    if failure is not None:
        log.warning(
            "Previous flux task %s gave no image (%s): submitting anew", flux_task_id, failure
        )
        return None
    if info.state is TaskState.SUCCESS:
        log.info("Previous flux task %s succeeded: reusing it, not submitting", flux_task_id)
    else:
        log.info(
            "Re-attaching to previous flux task %s (%s): not submitting",
            flux_task_id,
            info.raw_state,
        )
    return flux_task_id, info
