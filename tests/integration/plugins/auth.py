"""An auth manager for the plugin's tests: Airflow's simple one, with one user kept out.

``outsider`` is signed in like anyone else but may not read the DAGs in :data:`CLOSED_DAGS`,
as a role-based auth manager would decide; the plugin must ask and obey. ``editor`` has the
simple auth manager's ``user`` role: not an admin, but allowed to edit XComs through the REST
API, which is how the attacks on the images route begin.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

OUTSIDER = "outsider"
EDITOR = "editor"
ROLES = {"admin": "admin", EDITOR: "user", OUTSIDER: "viewer"}
CLOSED_DAGS = frozenset({"flux_text_to_image", "flux_mapped_batch"})


class DenyingAuthManager(SimpleAuthManager):
    """Denies :data:`OUTSIDER` every DAG in :data:`CLOSED_DAGS`."""

    def is_authorized_dag(self, *, method: Any, user: Any, **options: Any) -> bool:
        details = options.get("details")
        if user.get_name() == OUTSIDER and getattr(details, "id", None) in CLOSED_DAGS:
            return False
        return bool(super().is_authorized_dag(method=method, user=user, **options))
