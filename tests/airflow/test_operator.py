"""``FluxGenerateImageOperator`` and ``FluxTaskSensor`` called directly, against the fake API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from flux_provider.operators import FluxGenerateImageOperator
from flux_provider.outcomes import FluxTaskError
from flux_provider.sensors import FluxTaskSensor
from flux_provider.testing import FakeFluxServer, Fault
from flux_provider.triggers import FluxTaskTrigger
from tests.airflow.conftest import API_KEY


class FakeTI:
    """The part of a task instance the operator touches."""

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class FakeStore(dict[str, Any]):
    """A ``task_state_store`` kept in memory."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def _context(store: FakeStore | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"ti": FakeTI()}
    if store is not None:
        context["task_state_store"] = store
    return context


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
    context = _context(FakeStore())
    with pytest.raises(TaskDeferred) as info:
        _operator(timeout=120).execute(context)
    deferred = info.value
    assert isinstance(deferred.trigger, FluxTaskTrigger)
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is None
    flux_task_id = context["ti"].xcoms["flux_task_id"]
    assert context["task_state_store"]["flux_task_id"] == flux_task_id
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
    result = _operator().execute(_context())
    assert result["state"] == "success"
    assert result["result_urls"]


def test_sync_path_polls_on_the_worker(fake_api: FakeFluxServer) -> None:
    context = _context()
    result = _operator(deferrable=False).execute(context)
    assert result["state"] == "success"
    assert result["flux_task_id"] == context["ti"].xcoms["flux_task_id"]
    assert context["ti"].xcoms["_link_FluxResultLink"] == result["result_urls"][0]
    assert json.loads(json.dumps(result)) == result
    assert fake_api.stats.poll_requests >= 2


def test_fire_and_forget_returns_the_id(fake_api: FakeFluxServer) -> None:
    result = _operator(wait_for_completion=False).execute(_context())
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
    result = operator.execute(_context())
    assert fake_api.tasks[result["flux_task_id"]].input == {
        "prompt": "an orange cat in a paper boat",
        "aspect_ratio": "4:3",
        "input_urls": ["https://img.example/a.png"],
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
        _operator(**overrides).execute(_context())
    assert fake_api.stats.requests == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"aspect_ratio": "5:3"}, "aspect_ratio"),
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
    operator.hook.client._sleep = lambda seconds: None  # type: ignore[method-assign]
    with pytest.raises(expected, match="nope"):
        operator.execute(_context())


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
        "cost_time": 12,
        "create_time": 1,
        "complete_time": 2,
        "update_time": 2,
    }
    return {**base, **fields}


@pytest.mark.usefixtures("fake_api")
def test_execute_complete_success() -> None:
    context = _context()
    result = _operator().execute_complete(context, _event("success", task=_summary()))
    assert result["result_urls"] == ["https://cdn.example/1.png"]
    assert context["ti"].xcoms["_link_FluxResultLink"] == "https://cdn.example/1.png"


@pytest.mark.parametrize(
    ("event", "expected", "text"),
    [
        (None, Exception, "no usable event"),
        ({"status": "exploded", "flux_task_id": "task_1"}, Exception, "unknown event"),
        ({"status": "success"}, Exception, "unknown event"),
        (
            _event("failed", task=_summary(state="fail", fail_code="500", fail_msg="GPU")),
            FluxTaskError,
            "GPU",
        ),
        (
            _event("failed", task=_summary(state="fail", fail_code="400", fail_msg="nsfw")),
            AirflowFailException,
            "nsfw",
        ),
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
        _operator().execute_complete(_context(), event)


def test_sensor_defers_then_completes(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    sensor = FluxTaskSensor(task_id="wait", flux_task_id=flux_task_id, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(_context())
    assert info.value.trigger.serialize()[1]["flux_task_id"] == flux_task_id
    result = sensor.execute_complete(_context(), _event("success", task=_summary()))
    assert result["state"] == "success"


def test_sensor_pokes_until_done(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    sensor = FluxTaskSensor(task_id="wait", flux_task_id=flux_task_id, deferrable=False)
    assert sensor.poke(_context()) is False
    fake_api.complete(flux_task_id)
    done = sensor.poke(_context())
    assert done
    assert not isinstance(done, bool)
    assert done.xcom_value["flux_task_id"] == flux_task_id


def test_sensor_fails_like_the_operator(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    fake_api.fail(flux_task_id, fail_code="422", fail_msg="violates policy")
    sensor = FluxTaskSensor(task_id="wait", flux_task_id=flux_task_id, deferrable=False)
    with pytest.raises(AirflowFailException, match="violates policy"):
        sensor.poke(_context())


def test_sensor_tolerates_a_transient_poll_error(fake_api: FakeFluxServer) -> None:
    flux_task_id = fake_api.submit({"prompt": "made elsewhere"})
    fake_api.add_fault(Fault(endpoint="poll", status=500, times=None))
    sensor = FluxTaskSensor(
        task_id="wait", flux_task_id=flux_task_id, deferrable=False, max_consecutive_errors=1
    )
    sensor.hook.client._sleep = lambda seconds: None  # type: ignore[method-assign]
    assert sensor.poke(_context()) is False
    with pytest.raises(FluxTaskError):
        sensor.poke(_context())


def test_retry_reattaches_and_success_forgets_the_task(fake_api: FakeFluxServer) -> None:
    store = FakeStore()
    with pytest.raises(TaskDeferred):
        _operator().execute(_context(store))
    flux_task_id = store["flux_task_id"]
    fake_api.complete(flux_task_id)
    # The next try finds the recorded task, already succeeded: no new submission.
    result = _operator(deferrable=False).execute(_context(store))
    assert result["flux_task_id"] == flux_task_id
    assert fake_api.stats.create_requests == 1
    # Success forgets it, so clearing the task later generates a new image.
    assert "flux_task_id" not in store
    assert _operator(wait_for_completion=False).execute(_context(store))["flux_task_id"] != (
        flux_task_id
    )
    assert fake_api.stats.create_requests == 2


def test_retry_after_a_failed_generation_submits_anew(fake_api: FakeFluxServer) -> None:
    store = FakeStore()
    first = _operator(wait_for_completion=False).execute(_context(store))["flux_task_id"]
    fake_api.fail(first, fail_code="500", fail_msg="GPU error")
    second = _operator(wait_for_completion=False).execute(_context(store))["flux_task_id"]
    assert second != first
    assert store["flux_task_id"] == second


def test_reattach_can_be_turned_off(fake_api: FakeFluxServer) -> None:
    store = FakeStore({"flux_task_id": fake_api.submit({"prompt": "earlier"})})
    _operator(wait_for_completion=False, reattach=False).execute(_context(store))
    assert fake_api.stats.create_requests == 1


def test_sync_path_logs_each_state_change(
    fake_api: FakeFluxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.duration = 0.6
    result = _operator(deferrable=False, poll_interval=0.02).execute(_context())
    flux_task_id = result["flux_task_id"]
    lines = [line for line in capsys.readouterr().out.splitlines() if flux_task_id in line]
    assert any(f"Submitted flux task {flux_task_id}" in line for line in lines)
    changes = [
        s for s in ("waiting", "queuing", "generating") for line in lines if f": {s} after" in line
    ]
    # One line per state change (with elapsed time and polls made), not one per poll.
    assert changes == ["waiting", "queuing", "generating"]


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
            task.execute(_context())
        assert API_KEY not in str(info.value)
