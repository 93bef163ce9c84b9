"""The Airflow API server app in this process, with the FLUX images plugin mounted by Airflow.

Airflow builds the app as ``airflow api-server`` does (``create_app("core")``): the plugin comes
in through its entry point, the auth manager is
:class:`tests.integration.plugins.auth.DenyingAuthManager`.
Requests go through FastAPI's test client; tokens are minted by that auth manager.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.plugins.auth import ROLES

AUTH_ENV = {
    "AIRFLOW__CORE__AUTH_MANAGER": "tests.integration.plugins.auth.DenyingAuthManager",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in ROLES.items()),
    "AIRFLOW__API_AUTH__JWT_SECRET": "flux-ui-tests-" + "0" * 64,
}


@pytest.fixture(scope="module")
def api_server(airflow_db: None) -> Iterator[TestClient]:
    """Airflow's API server app with the plugin; the auth manager is reset afterwards."""
    from airflow.api_fastapi.app import create_app, purge_cached_app

    with pytest.MonkeyPatch.context() as patch:
        for name, value in AUTH_ENV.items():
            patch.setenv(name, value)
        purge_cached_app()
        try:
            with TestClient(create_app("core")) as client:
                yield client
        finally:
            purge_cached_app()


def bearer(username: str) -> dict[str, str]:
    """An ``Authorization`` header for ``username`` of the test auth manager."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token: Any = get_auth_manager().generate_jwt(
        SimpleAuthManagerUser(username=username, role=ROLES[username])
    )
    return {"Authorization": f"Bearer {token}"}
