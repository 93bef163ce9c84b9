"""What carries a submitted task across Airflow tries: the task instance's ``task_state_store``.

Airflow 3.3 gives each task instance a store that outlives its tries (XCom is cleared when a
new try starts); below 3.3 there is none, and a retry cannot re-attach.
"""

from __future__ import annotations

from typing import Any

STATE_KEY = "flux_task_id"
"""Key of the task id in ``task_state_store`` and XCom; renaming it breaks in-flight retries."""


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
