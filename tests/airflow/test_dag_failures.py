"""Failure classification through a real Airflow run (``dag.test()`` with retries)."""

from __future__ import annotations

from typing import Any

import pytest

from flux_provider.testing import FakeFluxServer, Fault
from tests.conftest import load_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


def _only_ti(run: Any) -> Any:
    (ti,) = run.get_task_instances()
    return ti


def test_validation_error_fails_without_retry(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="create", status=422, times=None, message="bad field"))
    run = load_dag("flux_test_deferred").test()
    ti = _only_ti(run)
    assert run.state == "failed"
    assert ti.state == "failed"
    assert ti.try_number == 1
    assert fake_api.stats.create_requests == 1


def test_server_error_burst_is_retried_by_airflow(fake_api: FakeFluxServer) -> None:
    # The client retries a 500 four times in one try; five in a row exhaust the first try.
    fake_api.add_fault(Fault(endpoint="create", status=500, times=4, message="overloaded"))
    run = load_dag("flux_test_deferred").test()
    ti = _only_ti(run)
    assert run.state == "success"
    assert ti.try_number == 2
    assert fake_api.stats.create_requests == 5
    assert fake_api.stats.tasks_created == 1
