"""``FluxResultLink``: the "FLUX result" button on the task's page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import XCom
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class FluxResultLink(BaseOperatorLink):
    """Opens the first result image, or its stored copy when that is a browsable URL.

    The task pushes the link to XCom before it ends (Airflow 3 reads links from
    XCom), see :func:`persist_result_link`.
    """

    name = "FLUX result"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The stored link, or an empty string before the task produced one."""
        value = XCom.get_value(key=self.xcom_key, ti_key=ti_key)
        return value if isinstance(value, str) else ""


def persist_result_link(context: Any, url: str | None) -> None:
    """Push the link's target for the current task instance."""
    if url:
        context["ti"].xcom_push(key=FluxResultLink().xcom_key, value=url)
