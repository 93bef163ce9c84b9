"""Behaviour of the embedded fake FLUX API, exercised over real loopback HTTP."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from flux_provider.testing import FakeFluxServer, Fault, render_image
from tests.support.fake import (
    BALANCE,
    CREATE,
    DOCUMENTED_FIELDS,
    ESTIMATE,
    INFO,
    KEY,
    WAIT,
    FakeClock,
    body,
    create,
    http_client,
    task_info,
)

# Names of the other vendor's wire that must never reappear in an answer.
FOREIGN_NAMES = ("taskId", "state", "resultJson", "resultUrls", "failCode", "failMsg", "msg")


def _json_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _json_keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _json_keys(item)}
    return set()


# -- create and task info --------------------------------------------------------------------


def test_create_answers_task_id_in_envelope(server: FakeFluxServer, client: httpx.Client) -> None:
    response = client.post(CREATE, json=body())

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    envelope = response.json()
    assert set(envelope) == {"code", "message", "data"}
    assert (envelope["code"], envelope["message"]) == (200, "success")
    assert set(envelope["data"]) == {"task_id"}
    assert re.fullmatch(r"task_[0-9a-f]{32}", envelope["data"]["task_id"])
    assert list(server.tasks) == [envelope["data"]["task_id"]]


def test_task_ids_are_unique(client: httpx.Client) -> None:
    ids = {create(client) for _ in range(20)}

    assert len(ids) == 20


def test_task_info_of_a_running_task_has_the_documented_shape(
    server: FakeFluxServer, client: httpx.Client
) -> None:
    payload = body(aspect_ratio="16:9", resolution="1K", seed=7, future_field={"a": 1})
    before = int(time.time())
    task_id = create(client, payload)

    data = task_info(client, task_id)

    assert set(data) == DOCUMENTED_FIELDS
    assert data["task_id"] == task_id
    assert data["provider"] == "Black Forest Labs"
    assert data["model_version"] == "flux-2-max"
    assert data["status"] == "pending"
    assert data["param"] == {"model": "flux-2-max", "callback_url": None, "input": payload["input"]}
    assert isinstance(data["create_at"], int)
    assert before <= data["create_at"] <= int(time.time())
    assert data["create_at"] == int(server.tasks[task_id].created_at)
    assert (data["result"], data["duration_s"], data["complete_at"]) == (None, None, None)
    assert data["credits"] is None
    assert data["source"] == "api"


def test_status_walks_pending_running_success_with_the_clock(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client)

    statuses = [task_info(client, task_id)["status"]]
    for _ in range(3):
        clock.advance(1.0)
        statuses.append(task_info(client, task_id)["status"])

    assert statuses == ["pending", "running", "running", "success"]


def test_status_changes_at_one_third_and_at_the_end(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client)

    clock.advance(0.99)
    assert server.state_of(task_id) == "pending"
    clock.advance(0.02)
    assert server.state_of(task_id) == "running"
    clock.advance(1.98)
    assert server.state_of(task_id) == "running"
    clock.advance(0.01)
    assert server.state_of(task_id) == "success"


def test_success_carries_media_urls_timings_and_credits(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client)
    clock.advance(3.0)

    data = task_info(client, task_id)

    assert set(data) == DOCUMENTED_FIELDS
    assert data["status"] == "success"
    assert data["result"] == {
        "code": 200,
        "message": "success",
        "media_urls": [f"{server.base_url}/files/{task_id}/0.png"],
    }
    assert data["duration_s"] == 3.0
    created_at = server.tasks[task_id].created_at
    assert data["complete_at"] == int(created_at + 3.0)
    assert isinstance(data["complete_at"], int)
    assert data["credits"] == 6.0


def test_no_foreign_wire_names_in_any_answer(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    server.fail_next_tasks(1)
    failed, succeeded = create(client), create(client)
    clock.advance(3.0)
    answers = [
        client.post(CREATE, json=body()).json(),
        client.get(INFO, params={"task_id": failed}).json(),
        client.get(INFO, params={"task_id": succeeded}).json(),
        client.get(INFO, params={"task_id": "nope"}).json(),
        client.get(BALANCE).json(),
        client.post(ESTIMATE, json=body()).json(),
        client.get("/nowhere").json(),
    ]

    keys = set().union(*map(_json_keys, answers))
    assert keys.isdisjoint(FOREIGN_NAMES), keys & set(FOREIGN_NAMES)


def test_param_keeps_callback_url(client: httpx.Client) -> None:
    payload = {**body(), "callback_url": "https://example.invalid/hook"}

    task_id = create(client, payload)

    assert task_info(client, task_id)["param"] == {
        "model": "flux-2-max",
        "callback_url": "https://example.invalid/hook",
        "input": payload["input"],
    }


def test_duration_change_applies_to_later_tasks(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    slow = create(client)
    server.duration = 0.0
    fast = create(client)

    assert server.duration == 0.0
    assert task_info(client, fast)["status"] == "success"
    assert task_info(client, slow)["status"] == "pending"
    clock.advance(3.0)
    assert task_info(client, slow)["status"] == "success"


def test_negative_duration_is_rejected(server: FakeFluxServer) -> None:
    with pytest.raises(ValueError, match="duration"):
        server.duration = -1.0
    with pytest.raises(ValueError, match="duration"):
        FakeFluxServer(duration=float("nan"))


# -- authentication ----------------------------------------------------------------------------


def _authenticated_calls(http: httpx.Client) -> list[httpx.Response]:
    return [
        http.post(CREATE, json=body()),
        http.get(INFO, params={"task_id": "task_x"}),
        http.get(BALANCE),
        http.post(ESTIMATE, json=body()),
    ]


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "wrong"}, {"Authorization": f"Bearer {KEY}"}],
    ids=["missing", "wrong", "bearer-in-x-api-key-mode"],
)
def test_every_endpoint_needs_the_key(server: FakeFluxServer, headers: dict[str, str]) -> None:
    with http_client(server, **headers) as http:
        responses = _authenticated_calls(http)

    for response in responses:
        assert response.status_code == 401
        envelope = response.json()
        assert envelope["code"] == 401
        assert envelope["data"] is None
        assert "API key" in envelope["message"]
    assert server.tasks == {}


def test_the_key_header_name_is_case_insensitive(server: FakeFluxServer) -> None:
    with http_client(server, **{"X-API-KEY": KEY}) as http:
        statuses = [response.status_code for response in _authenticated_calls(http)]

    assert statuses == [200, 404, 200, 200]  # task_x is unknown, but the key passed


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
        http_client(fake, **headers) as http,
    ):
        response = http.post(CREATE, json=body())

    assert response.status_code == status
    assert response.json()["code"] == status


def test_a_disabled_key_gets_403_until_enabled(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client)
    clock.advance(3.0)
    server.disable_key()

    refused = _authenticated_calls(client)
    with http_client(server, **{"x-api-key": "wrong"}) as wrong:
        still_wrong = wrong.get(BALANCE)
    image = client.get(f"/files/{task_id}/0.png")
    server.enable_key()
    after = client.get(BALANCE)

    for response in refused:
        assert response.status_code == 403
        assert response.json() == {"code": 403, "message": "API key disabled", "data": None}
    assert still_wrong.status_code == 401
    assert image.status_code == 200  # result files need no key
    assert after.status_code == 200
    assert len(server.tasks) == 1


# -- request validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        ({**body(), "model": "flux-1"}, "unsupported model 'flux-1'"),
        ({"input": {"prompt": "x"}}, "unsupported model None"),
        (body(prompt=""), "input.prompt"),
        (body(prompt="   "), "input.prompt"),
        ({"model": "flux-2-max", "input": {"prompt": 3}}, "input.prompt"),
        ({"model": "flux-2-max", "input": {}}, "input.prompt"),
        ({"model": "flux-2-max", "input": "a fox"}, "'input' must be"),
        ({"model": "flux-2-max"}, "'input' must be"),
        ({**body(), "callback_url": 5}, "callback_url"),
        (body(img_urls="https://example.com/a.png"), "img_urls"),
        (body(img_urls=None), "img_urls"),
        (body(img_urls=[3]), "img_urls"),
        (body(img_urls=["ftp://example.com/a.png"]), "img_urls"),
        (body(img_urls=["file:///etc/passwd"]), "img_urls"),
        (body(img_urls=["example.com/a.png"]), "img_urls"),
        (body(img_urls=["https://"]), "img_urls"),
        (body(img_urls=["data:text/plain;base64,aGk="]), "img_urls"),
        (body(img_urls=["data:image/png,rawbytes"]), "img_urls"),
        (body(img_urls=["https://example.com/ok.png", "javascript:alert(1)"]), "img_urls"),
    ],
)
@pytest.mark.parametrize("path", [CREATE, ESTIMATE])
def test_invalid_bodies_are_422(
    server: FakeFluxServer,
    client: httpx.Client,
    path: str,
    payload: dict[str, Any] | bytes,
    fragment: str,
) -> None:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    response = client.post(path, content=content, headers={"content-type": "application/json"})

    assert response.status_code == 422
    envelope = response.json()
    assert envelope["code"] == 422
    assert envelope["data"] is None
    assert fragment in envelope["message"]
    assert server.tasks == {}
    assert server.balance == 1_000_000


@pytest.mark.parametrize(
    "img_urls",
    [
        [],
        ["https://example.com/a.png"],
        ["http://127.0.0.1:9/b.jpg", "HTTPS://EXAMPLE.COM/C.WEBP"],
        ["data:image/png;base64,iVBORw0KGgo=", "data:image/jpeg;base64,/9j/4AAQ"],
    ],
)
def test_valid_img_urls_are_accepted_and_kept(
    server: FakeFluxServer, client: httpx.Client, img_urls: list[str]
) -> None:
    task_id = create(client, body(img_urls=img_urls))

    assert task_info(client, task_id)["param"]["input"]["img_urls"] == img_urls
    assert server.tasks[task_id].input["img_urls"] == img_urls


def test_unknown_task_is_404(client: httpx.Client) -> None:
    response = client.get(INFO, params={"task_id": "task_nope"})

    assert response.status_code == 404
    assert response.json() == {"code": 404, "message": "task not found", "data": None}


@pytest.mark.parametrize("params", [{}, {"task_id": ""}, {"taskId": "task_x"}])
def test_task_info_without_task_id_is_422(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(INFO, params=params)

    assert response.status_code == 422
    assert response.json() == {
        "code": 422,
        "message": "query parameter 'task_id' is required",
        "data": None,
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", CREATE),
        ("POST", INFO),
        ("POST", BALANCE),
        ("GET", ESTIMATE),
        ("DELETE", CREATE),
        ("POST", "/api/v1/jobs/createTask"),
        ("GET", "/api/v1/jobs/recordInfo"),
    ],
)
def test_other_routes_are_404_envelopes(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)

    assert response.status_code == 404
    assert response.json() == {"code": 404, "message": "not found", "data": None}


# -- faults ----------------------------------------------------------------------------------


def test_status_fault_with_retry_after_then_normal(
    server: FakeFluxServer, client: httpx.Client
) -> None:
    server.add_fault(Fault("create", status=429, retry_after=2, message="slow down"))

    faulted = client.post(CREATE, json=body())
    normal = client.post(CREATE, json=body())

    assert faulted.status_code == 429
    assert faulted.headers["retry-after"] == "2"
    assert faulted.json() == {"code": 429, "message": "slow down", "data": None}
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

    response = client.get(INFO, params={"task_id": task_id})

    assert response.status_code == 200
    assert response.json() == {"code": 500, "message": "internal", "data": None}


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
    assert response.json()["data"]["task_id"] in server.tasks


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

    response = client.get(INFO, params={"task_id": task_id})

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


@pytest.mark.parametrize(
    ("endpoint", "method", "path"),
    [
        ("create", "POST", CREATE),
        ("poll", "GET", f"{INFO}?task_id=task_x"),
        ("balance", "GET", BALANCE),
        ("estimate", "POST", ESTIMATE),
    ],
)
def test_fault_only_hits_its_endpoint(
    server: FakeFluxServer, client: httpx.Client, endpoint: Any, method: str, path: str
) -> None:
    server.add_fault(Fault(endpoint, status=500, message=f"{endpoint} broke"))
    others = [
        (m, p)
        for m, p in [("POST", CREATE), ("GET", BALANCE), ("POST", ESTIMATE)]
        if (m, p) != (method, path)
    ]

    untouched = [client.request(m, p, json=body()).status_code for m, p in others]
    faulted = client.request(method, path, json=body())
    normal = client.request(method, path, json=body())

    assert untouched == [200] * len(others)
    assert faulted.status_code == 500
    assert faulted.json() == {"code": 500, "message": f"{endpoint} broke", "data": None}
    assert normal.status_code != 500


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
    server.add_fault(Fault("balance", status=429))

    with http_client(server, **{"x-api-key": "wrong"}) as http:
        statuses = [http.get(BALANCE).status_code for _ in range(2)]

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
    server.fail_next_tasks(2, code=501, message="nsfw")
    failing = [create(client), create(client)]
    passing = create(client)

    assert task_info(client, failing[0])["status"] == "pending"
    clock.advance(3.0)

    for task_id in failing:
        data = task_info(client, task_id)
        assert data["status"] == "failed"
        assert data["result"] == {"code": 501, "message": "nsfw"}
        assert data["credits"] == 0
        assert data["duration_s"] == 3.0
        assert data["complete_at"] is not None
        assert client.get(f"/files/{task_id}/0.png").status_code == 404
    assert task_info(client, passing)["status"] == "success"
    snapshot = server.tasks[failing[0]]
    assert (snapshot.status, snapshot.fail_code, snapshot.fail_message) == ("failed", 501, "nsfw")
    assert server.tasks[passing].fail_code is None


def test_fail_next_tasks_defaults_to_501(server: FakeFluxServer, clock: FakeClock) -> None:
    server.fail_next_tasks()
    task_id = server.submit({"prompt": "x"})
    clock.advance(3.0)

    snapshot = server.tasks[task_id]
    assert (snapshot.fail_code, snapshot.fail_message) == (501, "generation failed")


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
    server.fail(broken, code=422, message="bad prompt")

    succeeded = task_info(client, done)
    assert succeeded["status"] == "success"
    assert succeeded["duration_s"] == 1.5
    failed = task_info(client, broken)
    assert (failed["status"], failed["result"]) == (
        "failed",
        {"code": 422, "message": "bad prompt"},
    )
    completed_at = server.tasks[done].completed_at
    assert completed_at is not None
    assert completed_at >= before
    clock.advance(10.0)
    assert server.state_of(broken) == "failed"  # forced endings outlast the duration


def test_ending_an_ended_task(server: FakeFluxServer, clock: FakeClock) -> None:
    task_id = server.submit({"prompt": "x"})
    clock.advance(3.0)

    server.complete(task_id)  # already succeeded: nothing to do
    with pytest.raises(ValueError, match="already ended with status 'success'"):
        server.fail(task_id)
    assert server.state_of(task_id) == "success"


def test_unknown_task_ids_raise_key_error(server: FakeFluxServer) -> None:
    for action in (server.complete, server.fail, server.state_of):
        with pytest.raises(KeyError, match="unknown task id"):
            action("task_nope")


def test_submit_creates_a_pollable_task_without_counting(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = server.submit({"prompt": "outside", "seed": 3}, callback_url="https://x.invalid/h")

    first = task_info(client, task_id)
    assert first["status"] == "pending"
    assert first["param"] == {
        "model": "flux-2-max",
        "callback_url": "https://x.invalid/h",
        "input": {"prompt": "outside", "seed": 3},
    }
    clock.advance(3.0)
    assert task_info(client, task_id)["status"] == "success"
    assert server.stats.create_requests == 0
    assert server.stats.tasks_created == 0


@pytest.mark.parametrize(
    "task_input",
    [{}, {"prompt": ""}, {"prompt": 3}, {"prompt": "x", "img_urls": ["ftp://a/b.png"]}],
)
def test_submit_validates_like_create(
    server: FakeFluxServer, task_input: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match=r"prompt|img_urls"):
        server.submit(task_input)
    assert server.tasks == {}


def test_tasks_are_read_only_snapshots(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client, {**body(seed=1), "callback_url": "http://example.invalid/x"})
    before = server.tasks
    clock.advance(3.0)
    after = server.tasks

    assert before[task_id].status == "pending"
    assert before[task_id].completed_at is None
    assert before[task_id].credits is None
    assert after[task_id].status == "success"
    assert after[task_id].completed_at == pytest.approx(after[task_id].created_at + 3.0, abs=1e-6)
    assert after[task_id].credits == 6.0
    assert (after[task_id].fail_code, after[task_id].fail_message) == (None, None)
    assert after[task_id].model == "flux-2-max"
    assert after[task_id].duration == 3.0
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
    with http_client(server) as anonymous:  # result URLs need no key
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

    missing = client.get(f"/files/{task_id}/{name}")
    unknown = client.get("/files/task_nope/0.png")

    assert missing.status_code == unknown.status_code == 404
    assert missing.json() == {"code": 404, "message": "file not found", "data": None}
    assert server.stats.image_requests == 2


def test_result_url_is_fetchable(client: httpx.Client, clock: FakeClock) -> None:
    task_id = create(client)
    clock.advance(3.0)

    (url,) = task_info(client, task_id)["result"]["media_urls"]
    response = client.get(url)

    assert response.status_code == 200
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


# -- stats and request log -------------------------------------------------------------------


def test_stats_count_and_redact(server: FakeFluxServer, client: httpx.Client) -> None:
    payload = body()
    task_id = create(client, payload)
    with http_client(server, **{"x-api-key": "wrong"}) as wrong:
        wrong.post(CREATE, json=payload)
    task_info(client, task_id)
    client.get(INFO, params={"task_id": "nope"})
    client.get(BALANCE)
    client.post(ESTIMATE, json=payload)
    client.post(ESTIMATE, content=b"{}")
    client.get(f"/files/{task_id}/0.png")
    client.get("/elsewhere")

    stats = server.stats
    assert (stats.create_requests, stats.tasks_created) == (2, 1)
    assert (stats.poll_requests, stats.balance_requests, stats.estimate_requests) == (2, 1, 2)
    assert (stats.image_requests, stats.callbacks_sent) == (1, 0)
    assert stats.counters() == {
        "create_requests": 2,
        "tasks_created": 1,
        "poll_requests": 2,
        "balance_requests": 1,
        "estimate_requests": 2,
        "image_requests": 1,
        "callbacks_sent": 0,
        "rate_limited_creates": 0,
        "peak_in_flight": 1,
    }
    assert [(r.method, r.path) for r in stats.requests] == [
        ("POST", CREATE),
        ("POST", CREATE),
        ("GET", INFO),
        ("GET", INFO),
        ("GET", BALANCE),
        ("POST", ESTIMATE),
        ("POST", ESTIMATE),
        ("GET", f"/files/{task_id}/0.png"),
        ("GET", "/elsewhere"),
    ]
    first = stats.requests[0]
    assert first.headers["x-api-key"] == "***"
    assert stats.requests[1].headers["x-api-key"] == "***"
    assert json.loads(first.body) == payload
    assert stats.requests[2].query == {"task_id": task_id}
    times = [r.received_at for r in stats.requests]
    assert times == sorted(times)


def test_bearer_credentials_are_redacted() -> None:
    with (
        FakeFluxServer(api_key=KEY, auth_header="Authorization") as fake,
        http_client(fake, Authorization=f"Bearer {KEY}") as http,
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


def test_concurrent_creates_are_all_counted_and_charged(
    server: FakeFluxServer, client: httpx.Client
) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(lambda _: create(client), range(64)))

    assert len(set(ids)) == 64
    assert server.stats.create_requests == 64
    assert server.stats.tasks_created == 64
    assert set(server.tasks) == set(ids)
    assert server.balance == 1_000_000 - 64 * 6


# -- transport and lifecycle -----------------------------------------------------------------


def test_connections_are_kept_alive(server: FakeFluxServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    sockets = []
    try:
        for _ in range(3):
            connection.request("GET", f"{INFO}?task_id=nope", headers={"x-api-key": KEY})
            response = connection.getresponse()
            content = response.read()
            assert response.status == 404
            assert int(response.getheader("Content-Length", "-1")) == len(content)
            sockets.append(connection.sock)
    finally:
        connection.close()

    assert sockets[0] is not None
    assert all(sock is sockets[0] for sock in sockets)


def test_unreadable_bodies_are_refused(server: FakeFluxServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    try:
        connection.putrequest("POST", CREATE)
        connection.putheader("x-api-key", KEY)
        connection.putheader("Content-Length", "-5")
        connection.endheaders()
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()

    assert response.status == 400
    assert answer == {"code": 400, "message": "invalid Content-Length", "data": None}


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


def test_connection_json_names_a_bearer_header() -> None:
    with FakeFluxServer(api_key="k", auth_header="Authorization") as fake:
        connection = json.loads(fake.airflow_connection_json())

    assert connection == {
        "conn_type": "flux",
        "host": fake.base_url,
        "password": "k",
        "extra": {"header_name": "Authorization"},
    }
