"""Example DAGs run end to end with ``dag.test()`` (real Airflow, trigger run inline)."""

from __future__ import annotations

import pytest

from flux_provider.testing import FakeFluxServer
from tests.conftest import load_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_text_to_image_defers_and_succeeds(fake_api: FakeFluxServer) -> None:
    run = load_dag("flux_text_to_image").test()
    assert run.state == "success"
    assert fake_api.stats.tasks_created == 1
