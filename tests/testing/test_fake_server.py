"""Behaviour of the embedded fake FLUX API, exercised over real loopback HTTP."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from flux_provider.testing import FakeFluxServer, Fault, render_image

KEY = "fake-key"
CREATE = "/api/v1/jobs/createTask"
POLL = "/api/v1/jobs/recordInfo"
WAIT = 5.0  # upper bound for anything asynchronous; tests never sleep to win a race


class FakeClock:
    """Manually advanced monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[FakeFluxServer]:
    with FakeFluxServer(api_key=KEY, duration=3.0, clock=clock) as fake:
        yield fake


def _client(fake: FakeFluxServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=fake.base_url, headers=headers, timeout=WAIT, trust_env=False)


@pytest.fixture
def client(server: FakeFluxServer) -> Iterator[httpx.Client]:
    with _client(server, **{"x-api-key": KEY}) as http:
        yield http


def body(prompt: str = "a red fox", **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": "flux-2-max", "input": {"prompt": prompt, **extra}}
    return payload


def create(http: httpx.Client, payload: dict[str, Any] | None = None) -> str:
    response = http.post(CREATE, json=payload or body())
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["taskId"]
    return task_id


def poll(http: httpx.Client, task_id: str) -> dict[str, Any]:
    response = http.get(POLL, params={"taskId": task_id})
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["code"] == 200
    assert envelope["msg"] == "success"
    data: dict[str, Any] = envelope["data"]
    return data


# -- create and poll -------------------------------------------------------------------------


def test_create_answers_task_id_in_envelope(server: FakeFluxServer, client: httpx.Client) -> None:
    response = client.post(CREATE, json=body())

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    envelope = response.json()
    assert envelope["code"] == 200
    assert envelope["msg"] == "success"
    assert re.fullmatch(r"task_flux-2_\d{13}\d+", envelope["data"]["taskId"])
    assert list(server.tasks) == [envelope["data"]["taskId"]]


def test_task_ids_are_unique(client: httpx.Client) -> None:
    ids = {create(client) for _ in range(20)}

    assert len(ids) == 20


def test_poll_walks_through_states_with_the_clock(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    payload = body(aspect_ratio="16:9", resolution="1K", seed=7)
    task_id = create(client, payload)

    first = poll(client, task_id)
    assert first["state"] == "waiting"
    assert first["taskId"] == task_id
    assert first["model"] == "flux-2-max"
    assert json.loads(first["param"]) == payload
    assert first["resultJson"] == ""
    assert (first["failCode"], first["failMsg"]) == ("", "")
    assert first["costTime"] == 0
    assert first["completeTime"] is None
    assert first["updateTime"] == first["createTime"]

    states = [first["state"]]
    updates = [first["updateTime"]]
    for _ in range(3):
        clock.advance(1.0)
        data = poll(client, task_id)
        states.append(data["state"])
        updates.append(data["updateTime"])
    assert states == ["waiting", "queuing", "generating", "success"]
    assert updates == sorted(updates)

    done = poll(client, task_id)
    assert done["costTime"] == 3
    assert done["completeTime"] == done["updateTime"] == done["createTime"] + 3000
    result = json.loads(done["resultJson"])
    assert result == {"resultUrls": [f"{server.base_url}/files/{task_id}/0.png"]}


def test_state_changes_only_at_the_thirds(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client)

    clock.advance(0.99)
    assert server.state_of(task_id) == "waiting"
    clock.advance(0.02)
    assert server.state_of(task_id) == "queuing"
    clock.advance(1.98)
    assert server.state_of(task_id) == "generating"
    clock.advance(0.01)
    assert server.state_of(task_id) == "success"


def test_param_keeps_callback_url(client: httpx.Client) -> None:
    payload = {**body(), "callBackUrl": "https://example.invalid/hook"}

    task_id = create(client, payload)

    assert json.loads(poll(client, task_id)["param"]) == payload


def test_duration_change_applies_to_later_tasks(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    slow = create(client)
    server.duration = 0.0
    fast = create(client)

    assert server.duration == 0.0
    assert poll(client, fast)["state"] == "success"
    assert poll(client, slow)["state"] == "waiting"
    clock.advance(3.0)
    assert poll(client, slow)["state"] == "success"


def test_negative_duration_is_rejected(server: FakeFluxServer) -> None:
    with pytest.raises(ValueError, match="duration"):
        server.duration = -1.0
    with pytest.raises(ValueError, match="duration"):
        FakeFluxServer(duration=float("nan"))


# -- authentication and validation -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "wrong"}, {"Authorization": f"Bearer {KEY}"}],
    ids=["missing", "wrong", "bearer-in-x-api-key-mode"],
)
def test_create_and_poll_need_the_key(server: FakeFluxServer, headers: dict[str, str]) -> None:
    with _client(server, **headers) as http:
        responses = [http.post(CREATE, json=body()), http.get(POLL, params={"taskId": "x"})]

    for response in responses:
        assert response.status_code == 401
        envelope = response.json()
        assert envelope["code"] == 401
        assert envelope["data"] is None
        assert "API key" in envelope["msg"]
    assert server.tasks == {}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"Authorization": f"bearer {KEY}"}, 200),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": KEY}, 401),
        ({"x-api-key": KEY}, 401),
    ],
)
def test_bearer_mode(headers: dict[str, str], status: int) -> None:
    with (
        FakeFluxServer(api_key=KEY, auth_header="Authorization") as fake,
        _client(fake, **headers) as http,
    ):
        response = http.post(CREATE, json=body())

    assert response.status_code == status
    assert response.json()["code"] == status


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({**body(), "model": "flux-1"}).encode(), "unsupported model 'flux-1'"),
        (json.dumps({"input": {"prompt": "x"}}).encode(), "unsupported model None"),
        (json.dumps(body(prompt="")).encode(), "input.prompt"),
        (json.dumps(body(prompt="   ")).encode(), "input.prompt"),
        (json.dumps({"model": "flux-2-max", "input": {}}).encode(), "input.prompt"),
        (json.dumps({"model": "flux-2-max", "input": "a fox"}).encode(), "'input' must be"),
        (json.dumps({"model": "flux-2-max"}).encode(), "'input' must be"),
        (json.dumps({**body(), "callBackUrl": 5}).encode(), "callBackUrl"),
    ],
)
def test_invalid_create_body_is_422(
    server: FakeFluxServer, client: httpx.Client, content: bytes, fragment: str
) -> None:
    response = client.post(CREATE, content=content, headers={"content-type": "application/json"})

    assert response.status_code == 422
    envelope = response.json()
    assert envelope["code"] == 422
    assert envelope["data"] is None
    assert fragment in envelope["msg"]
    assert server.stats.tasks_created == 0


def test_unknown_task_is_404(client: httpx.Client) -> None:
    response = client.get(POLL, params={"taskId": "task_flux-2_nope"})

    assert response.status_code == 404
    assert response.json() == {"code": 404, "msg": "task not found", "data": None}


def test_poll_without_task_id_is_422(client: httpx.Client) -> None:
    response = client.get(POLL)

    assert response.status_code == 422
    assert "taskId" in response.json()["msg"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", CREATE), ("POST", POLL), ("DELETE", CREATE), ("GET", "/files/x")],
)
def test_other_routes_are_404_json(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)

    assert response.status_code == 404
    assert response.json()["code"] == 404


# -- faults ----------------------------------------------------------------------------------


def test_status_fault_with_retry_after_then_normal(
    server: FakeFluxServer, client: httpx.Client
) -> None:
    server.add_fault(Fault("create", status=429, retry_after=2, message="slow down"))

    faulted = client.post(CREATE, json=body())
    normal = client.post(CREATE, json=body())

    assert faulted.status_code == 429
    assert faulted.headers["retry-after"] == "2"
    assert faulted.json() == {"code": 429, "msg": "slow down", "data": None}
    assert normal.status_code == 200
    assert "retry-after" not in normal.headers
    assert server.stats.create_requests == 2
    assert server.stats.tasks_created == 1


def test_fractional_retry_after(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("create", status=503, retry_after=1.5))

    assert client.post(CREATE, json=body()).headers["retry-after"] == "1.5"


def test_body_code_fault_keeps_http_200(server: FakeFluxServer, client: httpx.Client) -> None:
    task_id = create(client)
    server.add_fault(Fault("poll", body_code=500, message="internal"))

    response = client.get(POLL, params={"taskId": task_id})

    assert response.status_code == 200
    assert response.json() == {"code": 500, "msg": "internal", "data": None}


def test_status_and_body_code_can_differ(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("create", status=400, body_code=455))

    response = client.post(CREATE, json=body())

    assert response.status_code == 400
    assert response.json()["code"] == 455


def test_delay_only_fault_answers_normally(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("create", delay=0.05))

    started = time.monotonic()
    response = client.post(CREATE, json=body())

    assert time.monotonic() - started >= 0.05
    assert response.status_code == 200
    assert response.json()["data"]["taskId"] in server.tasks


def test_delay_then_status(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("create", status=500, delay=0.05))

    assert client.post(CREATE, json=body()).status_code == 500


def test_drop_closes_without_answer(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("create", drop=True))

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(CREATE, json=body())
    after = client.post(CREATE, json=body())

    assert after.status_code == 200
    assert server.stats.create_requests == 2
    assert server.stats.tasks_created == 1


def test_malformed_fault_sends_broken_json(server: FakeFluxServer, client: httpx.Client) -> None:
    task_id = create(client)
    server.add_fault(Fault("poll", malformed=True))

    response = client.get(POLL, params={"taskId": task_id})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_fault_times_then_normal(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("create", status=500, times=2))

    statuses = [client.post(CREATE, json=body()).status_code for _ in range(3)]

    assert statuses == [500, 500, 200]


def test_unlimited_fault_lasts_until_cleared(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("create", status=502, times=None))

    statuses = [client.post(CREATE, json=body()).status_code for _ in range(4)]
    server.clear_faults()

    assert statuses == [502] * 4
    assert client.post(CREATE, json=body()).status_code == 200


def test_fault_only_hits_its_endpoint(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("poll", status=500))

    task_id = create(client)  # the create request does not consume the poll fault
    faulted = client.get(POLL, params={"taskId": task_id})
    normal = client.get(POLL, params={"taskId": task_id})

    assert faulted.status_code == 500
    assert normal.status_code == 200


def test_any_fault_hits_image_requests(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client)
    clock.advance(3.0)
    server.add_fault(Fault("any", status=503))

    faulted = client.get(f"/files/{task_id}/0.png")
    normal = client.get(f"/files/{task_id}/0.png")

    assert faulted.status_code == 503
    assert normal.status_code == 200


def test_faults_apply_in_fifo_order(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("any", status=429))
    server.add_fault(Fault("create", status=500))

    statuses = [client.post(CREATE, json=body()).status_code for _ in range(3)]

    assert statuses == [429, 500, 200]


def test_faults_apply_before_the_key_check(server: FakeFluxServer) -> None:
    server.add_fault(Fault("create", status=429))

    with _client(server, **{"x-api-key": "wrong"}) as http:
        statuses = [http.post(CREATE, json=body()).status_code for _ in range(2)]

    assert statuses == [429, 401]


def test_unknown_routes_do_not_consume_faults(server: FakeFluxServer, client: httpx.Client) -> None:
    server.add_fault(Fault("any", status=500))

    assert client.get("/nowhere").status_code == 404
    assert client.post(CREATE, json=body()).status_code == 500


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "does nothing"),
        ({"status": 99}, "HTTP status"),
        ({"status": 500, "times": 0}, "times"),
        ({"delay": -1.0}, "delay"),
        ({"drop": True, "status": 500}, "drop"),
        ({"malformed": True, "status": 500}, "malformed"),
        ({"retry_after": 1.0}, "retry_after"),
        ({"status": 429, "retry_after": -1.0}, "retry_after"),
    ],
)
def test_contradictory_faults_are_rejected(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Fault("create", **kwargs)


def test_unknown_fault_endpoint_is_rejected() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        Fault("upload", status=500)  # type: ignore[arg-type]


# -- scripted outcomes -----------------------------------------------------------------------


def test_fail_next_tasks(server: FakeFluxServer, client: httpx.Client, clock: FakeClock) -> None:
    server.fail_next_tasks(2, fail_code="501", fail_msg="nsfw")
    failing = [create(client), create(client)]
    passing = create(client)

    assert poll(client, failing[0])["state"] == "waiting"
    clock.advance(3.0)

    for task_id in failing:
        data = poll(client, task_id)
        assert data["state"] == "fail"
        assert (data["failCode"], data["failMsg"]) == ("501", "nsfw")
        assert data["resultJson"] == ""
        assert data["completeTime"] is not None
        assert client.get(f"/files/{task_id}/0.png").status_code == 404
    assert poll(client, passing)["state"] == "success"
    assert server.tasks[failing[0]].fail_code == "501"


def test_fail_next_tasks_rejects_negative_count(server: FakeFluxServer) -> None:
    with pytest.raises(ValueError, match="count"):
        server.fail_next_tasks(-1)


def test_complete_and_fail_end_tasks_now(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    done, broken = create(client), create(client)
    clock.advance(1.5)

    before = time.time()
    server.complete(done)
    server.fail(broken, fail_code="422", fail_msg="bad prompt")

    assert poll(client, done)["state"] == "success"
    assert poll(client, done)["costTime"] == 2  # 1.5 s rounded
    failed = poll(client, broken)
    assert (failed["state"], failed["failCode"], failed["failMsg"]) == (
        "fail",
        "422",
        "bad prompt",
    )
    completed_at = server.tasks[done].completed_at
    assert completed_at is not None
    assert completed_at >= before
    clock.advance(10.0)
    assert server.state_of(broken) == "fail"  # forced endings outlast the duration


def test_ending_an_ended_task(server: FakeFluxServer, clock: FakeClock) -> None:
    task_id = server.submit({"prompt": "x"})
    clock.advance(3.0)

    server.complete(task_id)  # already succeeded: nothing to do
    with pytest.raises(ValueError, match="already ended in state 'success'"):
        server.fail(task_id)
    assert server.state_of(task_id) == "success"


def test_unknown_task_ids_raise_key_error(server: FakeFluxServer) -> None:
    for action in (server.complete, server.fail, server.state_of):
        with pytest.raises(KeyError, match="unknown task id"):
            action("task_flux-2_nope")


def test_submit_creates_a_pollable_task_without_counting(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = server.submit({"prompt": "outside", "seed": 3})

    assert poll(client, task_id)["state"] == "waiting"
    assert json.loads(poll(client, task_id)["param"]) == {
        "model": "flux-2-max",
        "input": {"prompt": "outside", "seed": 3},
    }
    clock.advance(3.0)
    assert poll(client, task_id)["state"] == "success"
    assert server.stats.create_requests == 0
    assert server.stats.tasks_created == 0


@pytest.mark.parametrize("task_input", [{}, {"prompt": ""}, {"prompt": 3}])
def test_submit_validates_the_prompt(server: FakeFluxServer, task_input: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="prompt"):
        server.submit(task_input)


def test_tasks_are_read_only_snapshots(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client, {**body(seed=1), "callBackUrl": "http://example.invalid/x"})
    before = server.tasks
    clock.advance(3.0)
    after = server.tasks

    assert before[task_id].state == "waiting"
    assert before[task_id].completed_at is None
    assert after[task_id].state == "success"
    assert after[task_id].completed_at == pytest.approx(after[task_id].created_at + 3.0, abs=1e-6)
    assert after[task_id].input == {"prompt": "a red fox", "seed": 1}
    assert after[task_id].callback_url == "http://example.invalid/x"
    with pytest.raises(TypeError):
        after["other"] = after[task_id]  # type: ignore[index]


# -- result files ----------------------------------------------------------------------------


def test_image_is_served_only_after_success(
    server: FakeFluxServer, clock: FakeClock, client: httpx.Client
) -> None:
    task_id = create(client, body(prompt="lighthouse", seed=9, aspect_ratio="9:16"))
    url = f"/files/{task_id}/0.png"

    assert client.get(url).status_code == 404
    clock.advance(3.0)
    with _client(server) as anonymous:  # result URLs need no key
        response = anonymous.get(url)

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == render_image("lighthouse", 9, "9:16")
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize("name", ["1.png", "0.jpg"])
def test_other_result_files_are_404(
    client: httpx.Client, clock: FakeClock, server: FakeFluxServer, name: str
) -> None:
    task_id = create(client)
    clock.advance(3.0)

    assert client.get(f"/files/{task_id}/{name}").status_code == 404
    assert client.get("/files/task_flux-2_nope/0.png").status_code == 404
    assert server.stats.image_requests == 2


def test_result_url_is_fetchable(client: httpx.Client, clock: FakeClock) -> None:
    task_id = create(client)
    clock.advance(3.0)

    (url,) = json.loads(poll(client, task_id)["resultJson"])["resultUrls"]
    response = client.get(url)

    assert response.status_code == 200
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


# -- callbacks -------------------------------------------------------------------------------


@dataclass
class CallbackSink:
    """Loopback HTTP listener recording callback bodies."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def sink() -> Iterator[CallbackSink]:
    holder: list[CallbackSink] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            holder[0].bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            holder[0].received.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    listener = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(CallbackSink(url=f"http://127.0.0.1:{listener.server_port}/hook"))
    thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield holder[0]
    listener.shutdown()
    listener.server_close()
    thread.join(WAIT)


def test_callback_is_posted_once_when_the_task_ends(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock, sink: CallbackSink
) -> None:
    task_id = create(client, {**body(), "callBackUrl": sink.url})

    assert poll(client, task_id)["state"] == "waiting"
    assert server.stats.callbacks_sent == 0
    clock.advance(3.0)
    data = poll(client, task_id)  # with an injected clock, observing the end sends it

    assert sink.received.wait(WAIT)
    assert sink.bodies == [data]
    poll(client, task_id)
    server.state_of(task_id)
    assert server.stats.callbacks_sent == 1


def test_callback_fires_on_time_without_polling(sink: CallbackSink) -> None:
    with (
        FakeFluxServer(api_key=KEY, duration=0.1) as fake,
        _client(fake, **{"x-api-key": KEY}) as http,
    ):
        task_id = create(http, {**body(), "callBackUrl": sink.url})

        assert sink.received.wait(WAIT)
        assert fake.stats.poll_requests == 0
        assert fake.stats.callbacks_sent == 1

    (sent,) = sink.bodies
    assert sent["taskId"] == task_id
    assert sent["state"] == "success"
    assert json.loads(sent["resultJson"])["resultUrls"] == [
        f"{fake.base_url}/files/{task_id}/0.png"
    ]


def test_callback_reports_failures(server: FakeFluxServer, sink: CallbackSink) -> None:
    task_id = server.submit({"prompt": "x"}, callback_url=sink.url)

    server.fail(task_id, fail_code="400", fail_msg="rejected")

    assert sink.received.wait(WAIT)
    (sent,) = sink.bodies
    assert (sent["state"], sent["failCode"], sent["failMsg"]) == ("fail", "400", "rejected")


def test_non_loopback_callbacks_are_never_called(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client, {**body(), "callBackUrl": "http://203.0.113.7/hook"})
    clock.advance(3.0)

    assert poll(client, task_id)["state"] == "success"
    assert server.tasks[task_id].callback_url == "http://203.0.113.7/hook"
    assert server.stats.callbacks_sent == 0


# -- stats and request log -------------------------------------------------------------------


def test_stats_count_and_redact(server: FakeFluxServer, client: httpx.Client) -> None:
    payload = body()
    task_id = create(client, payload)
    with _client(server, **{"x-api-key": "wrong"}) as wrong:
        wrong.post(CREATE, json=payload)
    poll(client, task_id)
    client.get(POLL, params={"taskId": "nope"})
    client.get(f"/files/{task_id}/0.png")
    client.get("/elsewhere")

    stats = server.stats
    assert (stats.create_requests, stats.tasks_created) == (2, 1)
    assert (stats.poll_requests, stats.image_requests, stats.callbacks_sent) == (2, 1, 0)
    assert [(r.method, r.path) for r in stats.requests] == [
        ("POST", CREATE),
        ("POST", CREATE),
        ("GET", POLL),
        ("GET", POLL),
        ("GET", f"/files/{task_id}/0.png"),
        ("GET", "/elsewhere"),
    ]
    first = stats.requests[0]
    assert first.headers["x-api-key"] == "***"
    assert stats.requests[1].headers["x-api-key"] == "***"
    assert json.loads(first.body) == payload
    assert stats.requests[2].query == {"taskId": task_id}
    times = [r.received_at for r in stats.requests]
    assert times == sorted(times)


def test_bearer_credentials_are_redacted() -> None:
    with (
        FakeFluxServer(api_key=KEY, auth_header="Authorization") as fake,
        _client(fake, Authorization=f"Bearer {KEY}") as http,
    ):
        http.post(CREATE, json=body())

        assert fake.stats.requests[0].headers["authorization"] == "***"


def test_stats_are_copies_and_can_be_reset(server: FakeFluxServer, client: httpx.Client) -> None:
    create(client)
    copy = server.stats
    copy.requests.clear()
    copy.create_requests = 99

    assert server.stats.create_requests == 1
    assert len(server.stats.requests) == 1
    server.reset_stats()
    assert server.stats.create_requests == 0
    assert server.stats.requests == []
    assert len(server.tasks) == 1  # tasks survive a stats reset


def test_concurrent_creates_are_all_counted(server: FakeFluxServer, client: httpx.Client) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(lambda _: create(client), range(64)))

    assert len(set(ids)) == 64
    assert server.stats.create_requests == 64
    assert server.stats.tasks_created == 64
    assert set(server.tasks) == set(ids)


# -- transport and lifecycle -----------------------------------------------------------------


def test_connections_are_kept_alive(server: FakeFluxServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    sockets = []
    try:
        for _ in range(3):
            connection.request("GET", f"{POLL}?taskId=nope", headers={"x-api-key": KEY})
            response = connection.getresponse()
            content = response.read()
            assert response.status == 404
            assert int(response.getheader("Content-Length", "-1")) == len(content)
            sockets.append(connection.sock)
    finally:
        connection.close()

    assert sockets[0] is not None
    assert all(sock is sockets[0] for sock in sockets)


def test_stop_closes_idle_keep_alive_connections() -> None:
    fake = FakeFluxServer(api_key=KEY).start()
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=WAIT)

    def round_trip() -> int:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        return response.status

    try:
        assert round_trip() == 404
        fake.stop()
        with pytest.raises((http.client.HTTPException, OSError)):
            round_trip()
    finally:
        connection.close()
        fake.stop()


def test_lifecycle() -> None:
    fake = FakeFluxServer(api_key="k", port=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.base_url

    assert fake.start() is fake
    assert fake.start() is fake  # idempotent
    assert fake.base_url == f"http://127.0.0.1:{fake.port}"
    assert json.loads(fake.airflow_connection_json()) == {
        "conn_type": "flux",
        "host": fake.base_url,
        "password": "k",
    }
    fake.stop()
    fake.stop()  # idempotent
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        fake.start()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fake.port), timeout=WAIT)
