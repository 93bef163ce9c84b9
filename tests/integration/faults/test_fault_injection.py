"""Fault injection through real Airflow runs (``dag.test()`` with retries) against the fake API.

Each case asserts the task's outcome and how many submissions the fake API
received: a blip must never fail a task, and a retry must never pay twice.
The numbering follows the "Failure handling" table of docs/operators.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from flux_provider.testing import FakeFluxServer, Fault
from flux_provider.triggers import FluxTaskTrigger
from tests.conftest import API_KEY, load_dag
from tests.support.compat import HAS_TASK_STATE_STORE

pytestmark = pytest.mark.usefixtures("airflow_db")


def _run(dag_id: str) -> tuple[str, int]:
    """Run a test DAG; return its final state and the task's last try number."""
    run = load_dag(dag_id).test()
    (ti,) = run.get_task_instances()
    return str(run.state), int(ti.try_number)


def _with_timeout_extra(
    monkeypatch: pytest.MonkeyPatch, server: FakeFluxServer, seconds: float
) -> None:
    connection = {
        "conn_type": "flux",
        "host": server.base_url,
        "password": API_KEY,
        "extra": {"timeout": seconds},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", json.dumps(connection))


def test_f1_rate_limited_with_retry_after_on_create_and_poll(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="create", status=429, retry_after=1, times=1))
    fake_api.add_fault(Fault(endpoint="poll", status=429, retry_after=1, times=2))
    assert _run("flux_test_deferred") == ("success", 1)
    assert fake_api.stats.create_requests == 2
    assert fake_api.stats.tasks_created == 1


def test_f2_maintenance_window_then_recovery(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="poll", status=455, times=4))
    assert _run("flux_test_deferred") == ("success", 1)
    assert fake_api.stats.tasks_created == 1


def test_f3_burst_of_server_errors(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="create", status=500, times=2))
    fake_api.add_fault(Fault(endpoint="poll", status=500, times=4))
    assert _run("flux_test_deferred") == ("success", 1)
    assert fake_api.stats.create_requests == 3
    assert fake_api.stats.tasks_created == 1


def test_f3_longer_burst_on_create_is_retried_by_airflow(fake_api: FakeFluxServer) -> None:
    """Four 500s exhaust the client's attempts in the first try; Airflow's retry then succeeds."""
    fake_api.add_fault(Fault(endpoint="create", status=500, times=4, message="overloaded"))
    assert _run("flux_test_deferred") == ("success", 2)
    assert fake_api.stats.create_requests == 5
    assert fake_api.stats.tasks_created == 1


def test_f4_connection_reset_mid_response_while_polling(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="poll", drop=True, times=3))
    assert _run("flux_test_deferred") == ("success", 1)
    assert fake_api.stats.tasks_created == 1


def test_f4_connection_reset_on_create_is_retried_by_airflow(fake_api: FakeFluxServer) -> None:
    """The POST may have been processed: the client never resends it; Airflow's retry does."""
    fake_api.add_fault(Fault(endpoint="create", drop=True, times=1))
    assert _run("flux_test_deferred") == ("success", 2)
    assert fake_api.stats.create_requests == 2
    assert fake_api.stats.tasks_created == 1


def test_f5_read_timeout_while_polling(
    fake_api: FakeFluxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_timeout_extra(monkeypatch, fake_api, 0.5)
    fake_api.add_fault(Fault(endpoint="poll", delay=1.5, times=2))
    assert _run("flux_test_deferred") == ("success", 1)
    assert fake_api.stats.tasks_created == 1


def test_f6_malformed_json(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="poll", malformed=True, times=3))
    assert _run("flux_test_deferred") == ("success", 1)
    assert fake_api.stats.tasks_created == 1


def test_f7_http_200_with_error_code_in_body(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="poll", body_code=500, times=3))
    assert _run("flux_test_deferred") == ("success", 1)
    assert fake_api.stats.tasks_created == 1


def test_f8_not_found_right_after_create(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="poll", status=404, times=2))
    assert _run("flux_test_deferred") == ("success", 1)
    assert fake_api.stats.tasks_created == 1


def test_f9_failed_generation_is_retried_with_a_new_task(fake_api: FakeFluxServer) -> None:
    fake_api.fail_next_tasks(1, code=501, message="upstream GPU error")
    assert _run("flux_test_deferred") == ("success", 2)
    assert fake_api.stats.tasks_created == 2


def test_f9_moderated_generation_fails_without_retry(fake_api: FakeFluxServer) -> None:
    fake_api.fail_next_tasks(1, code=400, message="content flagged by moderation")
    assert _run("flux_test_deferred") == ("failed", 1)
    assert fake_api.stats.tasks_created == 1


@pytest.mark.parametrize(("case", "status"), [("f10", 402), ("f11", 422)])
def test_f10_f11_hopeless_submissions_fail_at_once(
    fake_api: FakeFluxServer, case: str, status: int
) -> None:
    fake_api.add_fault(Fault(endpoint="create", status=status, times=None))
    assert _run("flux_test_deferred") == ("failed", 1)
    assert fake_api.stats.create_requests == 1


def test_f12_triggerer_restart_resumes_the_same_task(fake_api: FakeFluxServer) -> None:
    """A triggerer that dies mid-poll: the trigger is rebuilt from its stored kwargs."""
    from airflow.sdk.module_loading import import_string

    from tests.support.compat import serde

    fake_api.duration = 2.0
    flux_task_id = fake_api.submit({"prompt": "restart me"})
    deadline = time.time() + 60
    first = FluxTaskTrigger(flux_task_id, deadline=deadline, poll_interval=0.05)
    classpath, kwargs = first.serialize()
    stored = serde.serialize(kwargs)

    async def run_until_first_poll_then_die() -> None:
        agen = first.run()
        # Typed as an iterator like BaseTrigger.run, run() is an async generator: it can be closed.
        assert isinstance(agen, AsyncGenerator)
        task = asyncio.ensure_future(agen.__anext__())
        for _ in range(3000):  # bounded: at most 30 s
            if fake_api.stats.poll_requests:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await agen.aclose()

    asyncio.run(asyncio.wait_for(run_until_first_poll_then_die(), timeout=30))
    assert fake_api.state_of(flux_task_id) != "success"

    second = import_string(classpath)(**serde.deserialize(stored))
    assert second.deadline == deadline

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in second.run()]

    (event,) = asyncio.run(asyncio.wait_for(events(), timeout=30))
    assert event["status"] == "success"
    assert event["flux_task_id"] == flux_task_id
    assert fake_api.stats.create_requests == 0


@pytest.mark.parametrize("mode", ["deferred", "worker"])
def test_f13_retry_after_worker_death_reattaches(fake_api: FakeFluxServer, mode: str) -> None:
    assert _run(f"flux_test_dies_after_submit_{mode}") == ("success", 2)
    # Below Airflow 3.3 there is no task_state_store: the retry submits again.
    assert fake_api.stats.create_requests == (1 if HAS_TASK_STATE_STORE else 2)


def test_f14_retry_after_timeout_reattaches_to_the_running_task(
    fake_api: FakeFluxServer,
) -> None:
    fake_api.duration = 2.5
    state, tries = _run("flux_test_short_timeout")
    if not HAS_TASK_STATE_STORE:
        # Below Airflow 3.3 every try submits a new task, which outlasts the 1 s wait again.
        assert (state, tries, fake_api.stats.create_requests) == ("failed", 3, 3)
        return
    assert state == "success"
    assert tries >= 2
    assert fake_api.stats.create_requests == 1


def test_execution_timeout_holds_while_deferred(
    fake_api: FakeFluxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Airflow does not enforce execution_timeout on a deferred task: the trigger does."""
    fake_api.duration = 3600
    assert _run("flux_test_execution_timeout") == ("failed", 1)
    (flux_task_id,) = fake_api.tasks
    lines = capsys.readouterr().out.splitlines()
    failures = [line for line in lines if "Retryable failure" in line]
    assert failures
    # The 600 s timeout would say "timeout reached"; the 2 s execution_timeout ended the wait.
    assert "execution_timeout reached: waited" in failures[-1]
    assert flux_task_id in failures[-1]
    assert fake_api.stats.tasks_created == 1
