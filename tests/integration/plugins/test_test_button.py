"""The connection form's Test button, as the UI asks for it: ``POST /api/v2/connections/test``.

Airflow's own API server app in this process answers the request the button sends; the message
it returns is what the UI shows, so it must read as people write numbers.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from flux_provider.testing import FakeFluxServer
from tests.conftest import API_KEY
from tests.integration.plugins.conftest import bearer


@pytest.mark.parametrize(("balance", "shown"), [(1e6, "1,000,000"), (6.5, "6.5")])
def test_the_test_button_says_how_many_credits_in_words_people_read(
    api_server: TestClient, balance: float, shown: str
) -> None:
    with FakeFluxServer(api_key=API_KEY) as fake:
        fake.balance = balance
        answer = api_server.post(
            "/api/v2/connections/test",
            headers=bearer("admin"),
            json={
                "connection_id": "flux_button",
                "conn_type": "flux",
                "host": fake.base_url,
                "password": API_KEY,
            },
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": True,
        "message": f"Connected to {fake.base_url}: the account has {shown} credits.",
    }
    assert fake.stats.tasks_created == 0
