"""``FluxGenerateImageOperator`` and ``FluxTaskSensor`` called directly, against the fake API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from flux_provider.operators import FluxGenerateImageOperator
from flux_provider.operators.failures import FluxTaskError
from flux_provider.sensors import FluxTaskSensor
from flux_provider.testing import FakeFluxServer, Fault
from flux_provider.triggers import FluxTaskTrigger
from tests.conftest import API_KEY
from tests.support.airflow import FakeStore, FakeTI, task_context


def _operator(**overrides: Any) -> FluxGenerateImageOperator:
    options: dict[str, Any] = {
        "task_id": "generate",
        "prompt": "an orange cat in a paper boat",
        "aspect_ratio": "4:3",
        "deferrable": True,
        "poll_interval": 0.05,
    }
    options.update(overrides)
    return FluxGenerateImageOperator(**options)


def test_defers_with_the_right_trigger(fake_api: FakeFluxServer) -> None:
    ti, store = FakeTI(), FakeStore()
    with pytest.raises(TaskDeferred) as info:
        _operator(timeout=120).execute(task_context(ti, store))
    deferred = info.value
    assert isinstance(deferred.trigger, FluxTaskTrigger)
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is None
    flux_task_id = ti.xcoms["flux_task_id"]
    assert store["flux_task_id"] == flux_task_id
    _, kwargs = deferred.trigger.serialize()
    assert kwargs["flux_task_id"] == flux_task_id
    assert kwargs["flux_conn_id"] == "flux_default"
    assert kwargs["poll_interval"] == 0.05
    assert API_KEY not in json.dumps(kwargs)
    assert fake_api.stats.create_requests == 1
    assert fake_api.tasks[flux_task_id].input == {
        "prompt": "an orange cat in a paper boat",
        "aspect_ratio": "4:3",
    }


def test_already_finished_task_never_defers(fake_api: FakeFluxServer) -> None:
    fake_api.duration = 0
    result = _operator().execute(task_context())
    assert result["state"] == "success"
    assert result["result_urls"]


def test_sync_path_polls_on_the_worker(fake_api: FakeFluxServer) -> None:
    ti = FakeTI()
    result = _operator(deferrable=False).execute(task_context(ti))
    assert result["state"] == "success"
    assert result["flux_task_id"] == ti.xcoms["flux_task_id"]
    assert ti.xcoms["_link_FluxResultLink"] == result["result_urls"][0]
    assert json.loads(json.dumps(result)) == result
    assert fake_api.stats.poll_requests >= 2


def test_fire_and_forget_returns_the_id(fake_api: FakeFluxServer) -> None:
    result = _operator(wait_for_completion=False).execute(task_context())
    assert result == {"flux_task_id": result["flux_task_id"], "state": "submitted"}
    assert fake_api.stats.poll_requests == 0


def test_templated_fields_and_extra_input_pass_through(fake_api: FakeFluxServer) -> None:
    operator = _operator(
        deferrable=False,
        input_urls=["https://img.example/a.png"],
        extra_input={"safety_tolerance": 3, "new_host_knob": "x"},
        seed=11,
    )
    assert set(operator.template_fields) == {
        "prompt",
        "input_urls",
        "extra_input",
        "callback_url",
        "download_to",
    }
    result = operator.execute(task_context())
    assert fake_api.tasks[result["flux_task_id"]].input == {
        "prompt": "an orange cat in a paper boat",
        "aspect_ratio": "4:3",
        "img_urls": ["https://img.example/a.png"],
        "seed": 11,
        "safety_tolerance": 3,
        "new_host_knob": "x",
    }
    # The return value says what was asked for; reference images (maybe whole data: URIs)
    # only by their number.
    assert result["input"] == {
        "prompt": "an orange cat in a paper boat",
        "aspect_ratio": "4:3",
        "reference_images": 1,
        "seed": 11,
        "safety_tolerance": 3,
        "new_host_knob": "x",
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"input_urls": "https://img.example/a.png"}, "input_urls"),
        ({"extra_input": ["not", "a", "mapping"]}, "extra_input"),
        ({"callback_url": "not a url"}, "callback_url"),
    ],
)
def test_bad_rendered_input_fails_without_retry_and_sends_nothing(
    fake_api: FakeFluxServer, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(AirflowFailException, match=field):
        _operator(**overrides).execute(task_context())
    assert fake_api.stats.requests == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"aspect_ratio": "5x3"}, "aspect_ratio"),
        ({"resolution": "3K"}, "resolution"),
        ({"seed": -4}, "seed"),
        ({"model": "flux-1-dev"}, "model"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_static_mistakes_fail_when_the_dag_is_parsed(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _operator(**overrides)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (401, AirflowFailException),
        (402, AirflowFailException),
        (422, AirflowFailException),
        (505, AirflowFailException),
        (429, FluxTaskError),
        (455, FluxTaskError),
        (500, FluxTaskError),
    ],
)
def test_submit_failures_are_classified(
    fake_api: FakeFluxServer, code: int, expected: type[Exception]
) -> None:
    fake_api.add_fault(Fault(endpoint="create", status=code, times=None, message="nope"))
    operator = _operator()
    operator.hook.client._sleep = lambda seconds: None
    with pytest.raises(expected, match="nope"):
        operator.execute(task_context())


def _event(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, "flux_task_id": "task_1", **fields}


def _summary(**fields: Any) -> dict[str, Any]:
    base = {
        "flux_task_id": "task_1",
        "state": "success",
        "raw_state": "success",
        "result_urls": ["https://cdn.example/1.png"],
        "fail_code": None,
        "fail_msg": None,
        "credits": 6.0,
        "created_at": 1768900378.0,
        "completed_at": 1768900406.0,
        "duration_s": 28.0,
    }
    return {**base, **fields}


@pytest.mark.usefixtures("fake_api")
def test_execute_complete_success() -> None:
    ti = FakeTI()
    result = _operator().execute_complete(task_context(ti), _event("success", task=_summary()))
    assert result["result_urls"] == ["https://cdn.example/1.png"]
    assert ti.xcoms["_link_FluxResultLink"] == "https://cdn.example/1.png"


@pytest.mark.parametrize(
    ("event", "expected", "text"),
    [
        (None, Exception, "no usable event"),
        ({"status": "exploded", "flux_task_id": "task_1"}, Exception, "unknown event"),
        ({"status": "success"}, Exception, "unknown event"),
        (
            _event("failed", task=_summary(state="failed", fail_code="501", fail_msg="GPU")),
            FluxTaskError,
            "GPU",
        ),
        (
            _event("failed", task=_summary(state="failed", fail_code="400", fail_msg="nsfw")),
            AirflowFailException,
            "nsfw",
        ),
        (_event("success", task=_summary(result_urls=[])), FluxTaskError, "no image URL"),
        (_event("success", task={"state": "success"}), Exception, "no usable task"),
        (_event("failed"), Exception, "must carry the task"),
        (_event("timeout", message="timed out waiting"), FluxTaskError, "timed out"),
        (_event("error", message="503 x6", retryable=True), FluxTaskError, "503"),
        (_event("error", message="bad key", retryable=False), AirflowFailException, "bad key"),
    ],
)
@pytest.mark.usefixtures("fake_api")
def test_execute_complete_raises_per_event(
    event: dict[str, Any] | None, expected: type[Exception], text: str
) -> None:
    with pytest.raises(expected, match=text):
        _operator().execute_complete(task_context(), event)


def test_sensor_defers_then_completes(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    sensor = FluxTaskSensor(task_id="wait", flux_task_id=flux_task_id, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(task_context())
    assert info.value.trigger.serialize()[1]["flux_task_id"] == flux_task_id
    result = sensor.execute_complete(task_context(), _event("success", task=_summary()))
    assert result["state"] == "success"


def test_sensor_pokes_until_done(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    sensor = FluxTaskSensor(task_id="wait", flux_task_id=flux_task_id, deferrable=False)
    assert sensor.poke(task_context()) is False
    fake_api.complete(flux_task_id)
    done = sensor.poke(task_context())
    assert done
    assert not isinstance(done, bool)
    assert done.xcom_value is not None
    assert done.xcom_value["flux_task_id"] == flux_task_id


def test_sensor_fails_like_the_operator(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    fake_api.fail(flux_task_id, code=422, message="violates policy")
    sensor = FluxTaskSensor(task_id="wait", flux_task_id=flux_task_id, deferrable=False)
    with pytest.raises(AirflowFailException, match="violates policy"):
        sensor.poke(task_context())


def test_sensor_tolerates_a_transient_poll_error(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    fake_api.add_fault(Fault(endpoint="poll", status=500, times=None))
    sensor = FluxTaskSensor(
        task_id="wait", flux_task_id=flux_task_id, deferrable=False, max_consecutive_errors=1
    )
    sensor.hook.client._sleep = lambda seconds: None
    assert sensor.poke(task_context()) is False
    with pytest.raises(FluxTaskError):
        sensor.poke(task_context())


def test_retry_reattaches_and_success_forgets_the_task(fake_api: FakeFluxServer) -> None:
    store = FakeStore()
    with pytest.raises(TaskDeferred):
        _operator().execute(task_context(store=store))
    flux_task_id = store["flux_task_id"]
    fake_api.complete(flux_task_id)
    # The next try finds the recorded task, already succeeded: no new submission.
    result = _operator(deferrable=False).execute(task_context(store=store))
    assert result["flux_task_id"] == flux_task_id
    assert fake_api.stats.create_requests == 1
    # Success forgets it, so clearing the task later generates a new image.
    assert "flux_task_id" not in store
    assert _operator(wait_for_completion=False).execute(task_context(store=store))[
        "flux_task_id"
    ] != (flux_task_id)
    assert fake_api.stats.create_requests == 2


def test_retry_after_a_failed_generation_submits_anew(fake_api: FakeFluxServer) -> None:
    store = FakeStore()
    first = _operator(wait_for_completion=False).execute(task_context(store=store))["flux_task_id"]
    fake_api.fail(first, code=501, message="GPU error")
    second = _operator(wait_for_completion=False).execute(task_context(store=store))["flux_task_id"]
    assert second != first
    assert store["flux_task_id"] == second


def test_reattach_can_be_turned_off(fake_api: FakeFluxServer) -> None:
    store = FakeStore({"flux_task_id": fake_api.submit({"prompt": "earlier"})})
    _operator(wait_for_completion=False, reattach=False).execute(task_context(store=store))
    assert fake_api.stats.create_requests == 1


def test_sync_path_logs_each_state_change(
    fake_api: FakeFluxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Pending for the first second: long enough for the first poll to see it on a loaded machine.
    fake_api.duration = 3.0
    result = _operator(deferrable=False, poll_interval=0.02).execute(task_context())
    flux_task_id = result["flux_task_id"]
    lines = [line for line in capsys.readouterr().out.splitlines() if flux_task_id in line]
    assert any(f"Submitted flux task {flux_task_id}" in line for line in lines)
    changes = [s for s in ("pending", "running") for line in lines if f" is {s} after" in line]
    # One line per state change (with elapsed time and polls made), not one per poll.
    assert changes == ["pending", "running"]
    assert "cost 6 credits" in lines[-1]


@pytest.mark.parametrize(
    "connection",
    [
        {"conn_type": "flux", "host": "http://flux.example.com", "password": API_KEY},
        {"conn_type": "flux", "host": "https://flux.example.com", "password": ""},
        {"conn_type": "flux", "password": API_KEY, "extra": {"timeout": "soon"}},
    ],
)
def test_misconfigured_connection_fails_without_retry(
    monkeypatch: pytest.MonkeyPatch, connection: dict[str, Any]
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", json.dumps(connection))
    for task in (_operator(), FluxTaskSensor(task_id="wait", flux_task_id="task_1")):
        with pytest.raises(AirflowFailException, match="misconfigured") as info:
            task.execute(task_context())
        assert API_KEY not in str(info.value)


def test_min_balance_below_fails_without_retry_and_submits_nothing(
    fake_api: FakeFluxServer,
) -> None:
    fake_api.balance = 3
    with pytest.raises(AirflowFailException, match=r"3 credits, below min_balance=10"):
        _operator(min_balance=10).execute(task_context())
    assert (fake_api.stats.balance_requests, fake_api.stats.create_requests) == (1, 0)


def test_min_balance_above_submits(fake_api: FakeFluxServer) -> None:
    fake_api.balance = 30
    _operator(min_balance=10, wait_for_completion=False).execute(task_context())
    assert (fake_api.stats.balance_requests, fake_api.stats.tasks_created) == (1, 1)


def test_max_credits_below_the_estimate_fails_without_retry(fake_api: FakeFluxServer) -> None:
    with pytest.raises(AirflowFailException, match=r"cost 12 credits, above max_credits=8"):
        _operator(resolution="2K", max_credits=8).execute(task_context())
    assert (fake_api.stats.estimate_requests, fake_api.stats.create_requests) == (1, 0)


def test_max_credits_above_the_estimate_submits(fake_api: FakeFluxServer) -> None:
    _operator(max_credits=8, min_balance=1, wait_for_completion=False).execute(task_context())
    stats = fake_api.stats
    assert (stats.balance_requests, stats.estimate_requests, stats.tasks_created) == (1, 1, 1)


def test_no_credit_calls_when_unset(fake_api: FakeFluxServer) -> None:
    _operator(wait_for_completion=False).execute(task_context())
    assert (fake_api.stats.balance_requests, fake_api.stats.estimate_requests) == (0, 0)


def test_max_credits_without_an_estimate_endpoint_says_so() -> None:
    with FakeFluxServer(api_key=API_KEY, estimate_endpoint=False) as fake:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", fake.airflow_connection_json())
            with pytest.raises(AirflowFailException, match="no estimate-credits endpoint"):
                _operator(max_credits=100).execute(task_context())
        assert fake.stats.create_requests == 0


def test_credit_checks_retry_transient_errors(fake_api: FakeFluxServer) -> None:
    fake_api.add_fault(Fault(endpoint="balance", status=500, times=1))
    fake_api.add_fault(Fault(endpoint="estimate", status=429, times=1))
    operator = _operator(min_balance=1, max_credits=100, wait_for_completion=False)
    operator.hook.client._sleep = lambda seconds: None
    operator.execute(task_context())
    assert (fake_api.stats.balance_requests, fake_api.stats.estimate_requests) == (2, 2)
    assert fake_api.stats.tasks_created == 1


def test_a_retry_that_reattaches_makes_no_credit_calls(fake_api: FakeFluxServer) -> None:
    store = FakeStore({"flux_task_id": fake_api.submit({"prompt": "earlier"})})
    _operator(min_balance=1, max_credits=100, wait_for_completion=False).execute(
        task_context(store=store)
    )
    assert (fake_api.stats.balance_requests, fake_api.stats.estimate_requests) == (0, 0)
    assert fake_api.stats.create_requests == 0


def test_a_402_on_create_fails_without_retry(fake_api: FakeFluxServer) -> None:
    fake_api.balance = 1
    with pytest.raises(AirflowFailException, match="insufficient credits"):
        _operator().execute(task_context())
    assert fake_api.stats.tasks_created == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"min_balance": -1}, "min_balance"),
        ({"max_credits": float("nan")}, "max_credits"),
        ({"max_credits": "10"}, "max_credits"),
    ],
)
def test_bad_credit_limits_fail_when_the_dag_is_parsed(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        _operator(**overrides)


def test_input_urls_travel_as_img_urls(fake_api: FakeFluxServer) -> None:
    urls = ["https://img.example/a.png", "data:image/jpeg;base64,/9j/4AAQ"]
    result = _operator(input_urls=urls, wait_for_completion=False).execute(task_context())
    assert fake_api.tasks[result["flux_task_id"]].input["img_urls"] == urls


def test_a_retry_after_a_success_without_images_submits_anew(fake_api: FakeFluxServer) -> None:
    fake_api.result_shape = "empty"
    fake_api.duration = 0
    store = FakeStore()
    first = _operator(wait_for_completion=False).execute(task_context(store=store))["flux_task_id"]
    # The retry finds the first task without images: it submits anew (which has none either).
    with pytest.raises(FluxTaskError, match="no image URL"):
        _operator(deferrable=False).execute(task_context(store=store))
    second = store["flux_task_id"]
    assert second != first
    assert fake_api.stats.tasks_created == 2
    # Once the task's answer does carry images, the next retry reuses it.
    fake_api.result_shape = "media_urls"
    result = _operator(deferrable=False).execute(task_context(store=store))
    assert result["flux_task_id"] == second
    assert fake_api.stats.tasks_created == 2


def test_the_trigger_deadline_honours_execution_timeout(fake_api: FakeFluxServer) -> None:
    from datetime import datetime, timedelta, timezone

    ti = FakeTI()
    context = task_context(ti)
    started = datetime.now(timezone.utc) - timedelta(seconds=50)
    ti.start_date = started
    operator = _operator(timeout=900, execution_timeout=timedelta(seconds=60))
    with pytest.raises(TaskDeferred) as info:
        operator.execute(context)
    kwargs = info.value.trigger.serialize()[1]
    assert kwargs["deadline_name"] == "execution_timeout"
    assert kwargs["deadline"] == pytest.approx(started.timestamp() + 60)
    longer = _operator(timeout=5, execution_timeout=timedelta(hours=1))
    with pytest.raises(TaskDeferred) as info:
        longer.execute(context)
    assert info.value.trigger.serialize()[1]["deadline_name"] == "timeout"


def test_sensor_in_reschedule_mode_counts_errors_across_pokes(fake_api: FakeFluxServer) -> None:
    """Each poke runs in a new process: a new sensor object, the same state store."""
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    fake_api.add_fault(Fault(endpoint="poll", status=500, times=None))
    store = FakeStore()

    def poke() -> Any:
        sensor = FluxTaskSensor(
            task_id="wait",
            flux_task_id=flux_task_id,
            deferrable=False,
            mode="reschedule",
            max_consecutive_errors=2,
        )
        return sensor.poke(task_context(store=store))

    assert poke() is False
    assert poke() is False
    with pytest.raises(FluxTaskError, match="3 polls in a row failed"):
        poke()
    assert fake_api.stats.poll_requests == 3


def test_sensor_tolerates_not_found_right_after_submission(fake_api: FakeFluxServer) -> None:
    sensor = FluxTaskSensor(task_id="wait", flux_task_id="task_not_yet", deferrable=False)
    assert sensor.poke(task_context()) is False
    assert sensor.poke(task_context()) is False
    assert sensor.poke(task_context()) is False
    with pytest.raises(AirflowFailException, match="404"):
        sensor.poke(task_context())


def test_sensor_in_reschedule_mode_without_a_state_store_says_so(
    fake_api: FakeFluxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    sensor = FluxTaskSensor(
        task_id="wait", flux_task_id=flux_task_id, deferrable=False, mode="reschedule"
    )
    assert sensor.poke(task_context()) is False
    assert sensor.poke(task_context()) is False
    warnings = [line for line in capsys.readouterr().out.splitlines() if "Airflow < 3.3" in line]
    assert len(warnings) == 1
