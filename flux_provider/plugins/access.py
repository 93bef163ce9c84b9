"""Who may see a DAG's FLUX images: Airflow's auth manager decides, on every request.

A request is authenticated as Airflow's own API authenticates it (``Authorization: Bearer`` or
the UI's session cookie, which the UI's iframes send along with their image requests), then
authorised for the DAG's task instances and XComs, which is where the images are recorded.
Without a credential the answer is 401, without access 403.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status


def authorize(user: Any, dag_id: str) -> None:
    """Raise 403 unless ``user`` may read the DAG's task instances and their XComs."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.models.dag import DagModel

    manager = get_auth_manager()
    details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
    for entity in (DagAccessEntity.TASK_INSTANCE, DagAccessEntity.XCOM):
        if not manager.is_authorized_dag(
            method="GET", access_entity=entity, details=details, user=user
        ):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"no access to DAG {dag_id!r}")
