"""The fake's wire variations: status words, result shapes, failure shapes, the ``msg`` key."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flux_provider.testing import (
    FAILURE_SHAPES,
    RESULT_SHAPES,
    FailureShape,
    FakeFluxServer,
    FakeTaskStatus,
    Fault,
    ResultShape,
)
from tests.support.fake import (
    BALANCE,
    CREATE,
    DOCUMENTED_FIELDS,
    INFO,
    KEY,
    FakeClock,
    body,
    create,
    http_client,
    keyed_client,
    task_info,
)

URL = "{base}/files/{task_id}/0.png"
OK = {"code": 200, "message": "success"}

# What ``data`` carries for each result shape, written out from API.md's tolerance rules.
EXPECTED_RESULTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "media_urls": lambda url: {"result": {**OK, "media_urls": [url]}},
    "json_string": lambda url: {"result": json.dumps({**OK, "media_urls": [url]})},
    "result.images": lambda url: {"result": {**OK, "images": [url]}},
    "result.image_urls": lambda url: {"result": {**OK, "image_urls": [url]}},
    "result.urls": lambda url: {"result": {**OK, "urls": [url]}},
    "result.result_urls": lambda url: {"result": {**OK, "result_urls": [url]}},
    "result.resultUrls": lambda url: {"result": {**OK, "resultUrls": [url]}},
    "result.output": lambda url: {"result": {**OK, "output": [url]}},
    "result.outputs": lambda url: {"result": {**OK, "outputs": [url]}},
    "result.image": lambda url: {"result": {**OK, "image": url}},
    "result.url": lambda url: {"result": {**OK, "url": url}},
    "url": lambda url: {"result": url},
    "url_list": lambda url: {"result": [url]},
    "url_objects": lambda url: {"result": [{"url": url}]},
    "data": lambda url: {"result": None, "image_urls": [url]},
    "empty": lambda url: {"result": OK},
}

EXPECTED_FAILURES: dict[str, dict[str, Any]] = {
    "result": {"result": {"code": 501, "message": "nsfw"}},
    "error_message": {"result": None, "error_message": "nsfw", "error_code": 501},
    "fail_msg": {"result": None, "fail_msg": "nsfw", "fail_code": 501},
    "error_string": {"result": None, "error": "nsfw"},
    "error_object": {"result": None, "error": {"message": "nsfw", "code": 501}},
}

COMMON_FIELDS = DOCUMENTED_FIELDS - {"result"}


@pytest.fixture
def make_server(clock: FakeClock) -> Iterator[Callable[..., FakeFluxServer]]:
    started: list[FakeFluxServer] = []

    def make(**options: Any) -> FakeFluxServer:
        fake = FakeFluxServer(api_key=KEY, duration=3.0, clock=clock, **options).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


def _ended_task(fake: FakeFluxServer, clock: FakeClock) -> tuple[str, dict[str, Any]]:
    """Create a task, let its 3 s pass and read its ``TaskInfo`` data: (task id, data)."""
    with keyed_client(fake.base_url) as http:
        task_id = create(http)
        clock.advance(3.0)
        return task_id, task_info(http, task_id)


# -- status words ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ({}, ["pending", "running", "success"]),
        (
            {"pending": "queued", "running": "processing", "success": "succeeded"},
            ["queued", "processing", "succeeded"],
        ),
        ({"pending": "WAITING", "success": "SUCCESS"}, ["WAITING", "running", "SUCCESS"]),
        ({"running": "rendering"}, ["pending", "rendering", "success"]),
        ({"success": "completed"}, ["pending", "running", "completed"]),
    ],
)
def test_status_words_replace_the_canonical_words(
    make_server: Callable[..., FakeFluxServer],
    clock: FakeClock,
    words: dict[FakeTaskStatus, str],
    expected: list[str],
) -> None:
    fake = make_server(status_words=words)
    with keyed_client(fake.base_url) as http:
        task_id = create(http)
        sent = [task_info(http, task_id)["status"]]
        clock.advance(1.5)
        sent.append(task_info(http, task_id)["status"])
        clock.advance(1.5)
        sent.append(task_info(http, task_id)["status"])

    assert sent == expected
    assert fake.state_of(task_id) == "success"  # inspection keeps the canonical word
    assert fake.tasks[task_id].status == "success"


@pytest.mark.parametrize("word", ["error", "FAILED", "cancelled", "timeout"])
def test_status_words_for_failures(
    make_server: Callable[..., FakeFluxServer], clock: FakeClock, word: str
) -> None:
    fake = make_server(status_words={"failed": word})
    fake.fail_next_tasks(1)
    task_id, data = _ended_task(fake, clock)

    assert data["status"] == word
    assert fake.state_of(task_id) == "failed"


def test_status_words_can_change_while_serving(
    make_server: Callable[..., FakeFluxServer], clock: FakeClock
) -> None:
    fake = make_server()
    with keyed_client(fake.base_url) as http:
        task_id = create(http)
        before = task_info(http, task_id)["status"]
        fake.status_words = {"pending": "submitted"}
        after = task_info(http, task_id)["status"]

    assert (before, after) == ("pending", "submitted")
    assert fake.status_words == {"pending": "submitted"}


@pytest.mark.parametrize(
    ("words", "fragment"),
    [({"done": "x"}, "status_words key 'done'"), ({"success": " "}, "non-empty")],
)
def test_bad_status_words_are_rejected(words: dict[Any, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        FakeFluxServer(status_words=words)


# -- result shapes ---------------------------------------------------------------------------


def test_every_result_shape_is_covered_here() -> None:
    assert set(RESULT_SHAPES) == set(EXPECTED_RESULTS)
    assert RESULT_SHAPES[0] == "media_urls"


@pytest.mark.parametrize("shape", RESULT_SHAPES)
def test_result_shape_of_a_successful_task(
    make_server: Callable[..., FakeFluxServer], clock: FakeClock, shape: ResultShape
) -> None:
    fake = make_server(result_shape=shape)
    with keyed_client(fake.base_url) as http:
        task_id = create(http)
        running = task_info(http, task_id)
        clock.advance(3.0)
        data = task_info(http, task_id)
        image = http.get(f"/files/{task_id}/0.png")
    url = URL.format(base=fake.base_url, task_id=task_id)

    assert running["result"] is None
    assert "image_urls" not in running
    expected = EXPECTED_RESULTS[shape](url)
    assert {key: value for key, value in data.items() if key not in COMMON_FIELDS} == expected
    assert set(data) >= COMMON_FIELDS
    assert data["status"] == "success"
    assert data["credits"] == 6.0
    assert image.status_code == 200  # the file exists whatever the shape says


def test_empty_result_shape_names_no_url_anywhere(
    make_server: Callable[..., FakeFluxServer], clock: FakeClock
) -> None:
    fake = make_server(result_shape="empty")
    _, data = _ended_task(fake, clock)

    assert data["status"] == "success"
    assert "/files/" not in json.dumps(data)
    assert "http" not in json.dumps({k: v for k, v in data.items() if k != "param"})


def test_json_string_result_decodes_to_the_documented_object(
    make_server: Callable[..., FakeFluxServer], clock: FakeClock
) -> None:
    fake = make_server(result_shape="json_string")
    task_id, data = _ended_task(fake, clock)
    result = data["result"]

    assert isinstance(result, str)
    assert json.loads(result)["media_urls"] == [URL.format(base=fake.base_url, task_id=task_id)]


def test_result_shape_can_change_while_serving(
    make_server: Callable[..., FakeFluxServer], clock: FakeClock
) -> None:
    fake = make_server()
    with keyed_client(fake.base_url) as http:
        task_id = create(http)
        clock.advance(3.0)
        before = task_info(http, task_id)["result"]
        fake.result_shape = "url"
        after = task_info(http, task_id)["result"]

    assert before["media_urls"] == [after]
    assert fake.result_shape == "url"


def test_unknown_result_shape_is_rejected(make_server: Callable[..., FakeFluxServer]) -> None:
    with pytest.raises(ValueError, match="unknown result_shape 'images'"):
        FakeFluxServer(result_shape="images")  # type: ignore[arg-type]
    fake = make_server()
    with pytest.raises(ValueError, match="result_shape"):
        fake.result_shape = "nope"  # type: ignore[assignment]
    assert fake.result_shape == "media_urls"


# -- failure shapes --------------------------------------------------------------------------


def test_every_failure_shape_is_covered_here() -> None:
    assert set(FAILURE_SHAPES) == set(EXPECTED_FAILURES)
    assert FAILURE_SHAPES[0] == "result"


@pytest.mark.parametrize("shape", FAILURE_SHAPES)
@pytest.mark.parametrize("how", ["planned", "forced"])
def test_failure_shape_of_a_failed_task(
    make_server: Callable[..., FakeFluxServer], clock: FakeClock, shape: FailureShape, how: str
) -> None:
    fake = make_server(failure_shape=shape)
    if how == "planned":
        fake.fail_next_tasks(1, code=501, message="nsfw")
    with keyed_client(fake.base_url) as http:
        task_id = create(http)
        if how == "forced":
            fake.fail(task_id, code=501, message="nsfw")
        clock.advance(3.0)
        data = task_info(http, task_id)

    assert {key: value for key, value in data.items() if key not in COMMON_FIELDS} == (
        EXPECTED_FAILURES[shape]
    )
    assert data["status"] == "failed"
    assert data["credits"] == 0


def test_failure_shape_does_not_touch_successes(
    make_server: Callable[..., FakeFluxServer], clock: FakeClock
) -> None:
    fake = make_server(failure_shape="fail_msg")
    task_id, data = _ended_task(fake, clock)

    assert "fail_msg" not in data
    assert data["result"]["media_urls"] == [URL.format(base=fake.base_url, task_id=task_id)]


def test_unknown_failure_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown failure_shape"):
        FakeFluxServer(failure_shape="message")  # type: ignore[arg-type]


# -- the envelope's text field ---------------------------------------------------------------


def test_msg_key_renames_the_text_field_of_every_envelope(
    make_server: Callable[..., FakeFluxServer],
) -> None:
    fake = make_server(message_key="msg")
    fake.add_fault(Fault("balance", status=429, message="slow down"))
    with keyed_client(fake.base_url) as http:
        created = http.post(CREATE, json=body())
        info = http.get(INFO, params={"task_id": created.json()["data"]["task_id"]})
        faulted = http.get(BALANCE)
        invalid = http.post(CREATE, json=body(prompt=""))
        missing = http.get("/nowhere")
        no_file = http.get("/files/task_nope/0.png")
    with http_client(fake) as anonymous:
        unauthorized = anonymous.get(BALANCE)

    envelopes = [r.json() for r in (created, info, faulted, invalid, missing, no_file)]
    envelopes.append(unauthorized.json())
    for envelope in envelopes:
        assert set(envelope) == {"code", "msg", "data"}
    assert [e["msg"] for e in envelopes[:3]] == ["success", "success", "slow down"]
    assert envelopes[5] == {"code": 404, "msg": "file not found", "data": None}
    assert unauthorized.status_code == 401


def test_unknown_message_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="message_key"):
        FakeFluxServer(message_key="text")  # type: ignore[arg-type]
