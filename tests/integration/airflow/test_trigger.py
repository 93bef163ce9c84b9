"""``FluxTaskTrigger`` against the fake API: serialisation, every event, a non-blocking loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from typing import Any

import pytest

from flux_provider.api.client import FluxClient
from flux_provider.api.config import ClientConfig
from flux_provider.testing import FakeFluxServer, FakeTaskStatus, Fault
from flux_provider.triggers import FluxTaskTrigger
from tests.conftest import API_KEY
from tests.support.airflow import flux_trigger

PROMPT = {"prompt": "a paper crane on a desk"}


async def _events(trigger: FluxTaskTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


_trigger = flux_trigger


def test_serialisation_round_trip_through_serde() -> None:
    from airflow.sdk.module_loading import import_string

    from tests.support.compat import serde

    trigger = _trigger("task_flux-2_1", deadline=1_900_000_000.5, poll_interval=None)
    classpath, kwargs = trigger.serialize()
    assert classpath == "flux_provider.triggers.task.FluxTaskTrigger"
    restored_kwargs = serde.deserialize(serde.serialize(kwargs))
    assert restored_kwargs == kwargs
    assert all(isinstance(v, (str, int, float, type(None))) for v in kwargs.values())
    rebuilt = import_string(classpath)(**restored_kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert set(kwargs) == {
        "flux_task_id",
        "flux_conn_id",
        "deadline",
        "poll_interval",
        "max_consecutive_errors",
        "deadline_name",
    }


def test_kwargs_and_repr_hold_no_key(fake_api: FakeFluxServer) -> None:
    trigger = _trigger(fake_api.submit(PROMPT))
    assert API_KEY not in repr(trigger.serialize())
    assert API_KEY not in repr(trigger)


async def test_success_event(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit(PROMPT)
    (event,) = await _events(_trigger(flux_task_id))
    assert event["status"] == "success"
    assert event["flux_task_id"] == flux_task_id
    assert event["task"]["state"] == "success"
    assert event["task"]["result_urls"]
    assert event["polls"] >= 1
    assert fake_api.stats.create_requests == 0


async def test_failed_event_carries_code_and_retryable(fake_api: FakeFluxServer) -> None:
    fake_api.fail_next_tasks(1, code=422, message="prompt violates content policy")
    flux_task_id = fake_api.submit(PROMPT)
    (event,) = await _events(_trigger(flux_task_id))
    assert event["status"] == "failed"
    assert event["task"]["fail_code"] == "422"
    assert event["retryable"] is False
    assert "content policy" in event["message"]


async def test_timeout_event_names_task_and_state(fake_api: FakeFluxServer) -> None:
    fake_api.duration = 3600
    flux_task_id = fake_api.submit(PROMPT)
    (event,) = await _events(_trigger(flux_task_id, deadline=time.time() + 0.3))
    assert event["status"] == "timeout"
    assert event["retryable"] is True
    assert flux_task_id in event["message"]
    assert event["last_state"] == "pending"
    assert event["message"].startswith("timeout reached")


async def test_past_deadline_ends_without_polling(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit(PROMPT)
    (event,) = await _events(_trigger(flux_task_id, deadline=time.time() - 1))
    assert event["status"] == "timeout"
    assert fake_api.stats.poll_requests == 0


async def test_transient_errors_are_absorbed(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit(PROMPT)
    fake_api.complete(flux_task_id)
    fake_api.add_fault(Fault(endpoint="poll", status=500, times=2))
    fake_api.add_fault(Fault(endpoint="poll", drop=True, times=1))
    (event,) = await _events(_trigger(flux_task_id, poll_interval=0.01))
    assert event["status"] == "success"
    assert fake_api.stats.poll_requests == 4


async def test_too_many_errors_in_a_row_is_a_retryable_error(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit(PROMPT)
    fake_api.add_fault(Fault(endpoint="poll", status=455, times=None))
    (event,) = await _events(_trigger(flux_task_id, poll_interval=0.01))
    assert event["status"] == "error"
    assert event["retryable"] is True
    assert event["error_type"] == "ServiceUnavailableError"
    assert fake_api.stats.poll_requests == 4


async def test_bad_key_is_a_terminal_error(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit(PROMPT)
    fake_api.add_fault(Fault(endpoint="poll", status=401, times=None))
    (event,) = await _events(_trigger(flux_task_id))
    assert event["status"] == "error"
    assert event["retryable"] is False
    assert event["status_code"] == 401
    assert fake_api.stats.poll_requests == 1


async def test_a_deadline_from_execution_timeout_is_named(fake_api: FakeFluxServer) -> None:
    fake_api.duration = 3600
    trigger = _trigger(
        fake_api.submit(PROMPT), deadline=time.time() + 0.2, deadline_name="execution_timeout"
    )
    (event,) = await _events(trigger)
    assert event["status"] == "timeout"
    assert event["message"].startswith("execution_timeout reached")


@pytest.mark.parametrize(
    "words",
    [
        {"pending": "queued", "running": "processing", "success": "SUCCEEDED"},
        {"pending": "submitted", "running": "in_progress", "success": "completed"},
    ],
)
async def test_other_status_words(words: dict[FakeTaskStatus, str]) -> None:
    with FakeFluxServer(api_key=API_KEY, duration=0.2, status_words=words) as fake:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", fake.airflow_connection_json())
            (event,) = await _events(_trigger(fake.submit(PROMPT)))
    assert event["status"] == "success"
    assert event["task"]["raw_state"] == words["success"]


async def test_failure_words_and_shapes(fake_api: FakeFluxServer) -> None:
    fake_api.status_words = {"failed": "ERROR"}
    fake_api.failure_shape = "error_object"
    fake_api.fail_next_tasks(1, code=501, message="GPU out of memory")
    (event,) = await _events(_trigger(fake_api.submit(PROMPT)))
    assert event["status"] == "failed"
    assert event["retryable"] is True
    assert event["task"]["fail_code"] == "501"
    assert "GPU out of memory" in event["message"]


async def test_an_unknown_status_polls_until_the_deadline_and_is_logged_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    words: dict[FakeTaskStatus, str] = {"pending": "rendering", "running": "rendering"}
    with FakeFluxServer(api_key=API_KEY, duration=3600, status_words=words) as fake:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", fake.airflow_connection_json())
            trigger = _trigger(fake.submit(PROMPT), deadline=time.time() + 1.0, poll_interval=0.05)
            (event,) = await _events(trigger)
        polls = fake.stats.poll_requests
    assert event["status"] == "timeout"
    assert event["last_state"] == "rendering"
    assert polls >= 5
    lines = capsys.readouterr().out.splitlines()
    unknown = [line for line in lines if "unknown status 'rendering'" in line]
    assert len(unknown) == 1
    assert "warning" in unknown[0]


async def test_success_without_urls_is_a_retryable_failure(fake_api: FakeFluxServer) -> None:
    fake_api.result_shape = "empty"
    flux_task_id = fake_api.submit(PROMPT)
    (event,) = await _events(_trigger(flux_task_id))
    assert event["status"] == "success"
    from flux_provider.triggers.events import TaskEvent

    error = TaskEvent.parse(event).error()
    assert error is not None
    assert error.retryable
    assert flux_task_id in str(error)


def test_no_callback_blocks_the_event_loop(
    fake_api_process: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio debug mode reports every callback over 50 ms: there must be none."""
    config = ClientConfig(api_key=API_KEY, base_url=fake_api_process)
    with FluxClient(config) as client:
        triggers = [_trigger(client.create_task(PROMPT), poll_interval=0.1) for _ in range(20)]

    async def main() -> list[list[dict[str, Any]]]:
        asyncio.get_running_loop().slow_callback_duration = 0.05
        return await asyncio.gather(*(_events(trigger) for trigger in triggers))

    results: list[list[list[dict[str, Any]]]] = []

    def loop_thread() -> None:
        # Debug mode records a stack trace per future: a thread of its own keeps
        # that stack short (as in the triggerer), so the test measures our code.
        results.append(asyncio.run(main(), debug=True))

    # A full garbage collection of the test process (~120 ms after the other test files)
    # would count as a slow callback of whichever trigger it interrupts: not our code.
    gc.collect()
    gc.disable()
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            thread = threading.Thread(target=loop_thread)
            thread.start()
            thread.join(timeout=60)
    finally:
        gc.enable()
    assert not thread.is_alive()
    (gathered,) = results
    assert [events[0]["status"] for events in gathered] == ["success"] * 20
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == []
