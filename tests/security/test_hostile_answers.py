"""Hostile API answers: each a clear error, never a crash of the trigger, never an unbounded read.

One table of answers, served over loopback by a purpose-built server. Poll
answers go through :class:`FluxTaskTrigger` run to its end, as the triggerer
runs it: the trigger must yield exactly one event (``error`` for the hostile
ones) and nothing may escape its generator. Create answers go through the
operator's ``execute``: it must fail with an Airflow exception that says what
was wrong, after exactly one create request (a create is never blindly resent).
The 50 MB bodies are offered for real; the server counts the bytes it managed
to send before the client hung up.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from flux_provider.client import MAX_RESPONSE_BYTES
from flux_provider.operators import FluxGenerateImageOperator
from flux_provider.outcomes import FluxTaskError
from flux_provider.testing import FakeFluxServer
from tests.security.hostile import (
    CREATE_PATH,
    POLL_PATH,
    Answer,
    HostileServer,
    Seen,
    envelope,
    json_answer,
    task_record,
)
from tests.security.support import HOSTILE_CONN_ID, KEY, run_trigger, task_context, trigger_for

MIB = 1 << 20
BIG = 50 * MIB
READ_BOUND = 16 * MIB
"""What a capped reader may let through: the 1 MiB cap plus socket buffers, far below 50 MB."""


def _big_json(**options: Any) -> Answer:
    return Answer(
        prefix=b'{"code": 200, "msg": "', filler=BIG, filler_byte=b"A", suffix=b'"}', **options
    )


def _record(**overrides: Any) -> Answer:
    return json_answer(envelope(task_record(**overrides)))


def _escaped_key_inside_result_json() -> Answer:
    """The key inside resultJson, JSON-escaped twice: only the inner decode reveals it."""
    inner = '{"resultUrls": ["https://cdn.example/\\u0073' + KEY[1:] + '.png"]}'
    assert KEY not in json.dumps(inner)
    return _record(resultJson=inner)


@dataclass(frozen=True)
class Hostile:
    """One hostile answer and what the code under test must make of it."""

    id: str
    answer: Answer
    fragment: str
    status: str = "error"
    retryable: bool | None = None
    big: bool = False


POLL_ANSWERS: list[Hostile] = [
    Hostile("50MB-declared-length", _big_json(), "declares 524288", big=True),
    Hostile(
        "50MB-close-delimited",
        _big_json(framing="close"),
        f"over the {MAX_RESPONSE_BYTES}-byte limit",
        retryable=False,
        big=True,
    ),
    Hostile(
        "50MB-chunked",
        _big_json(framing="chunked"),
        f"over the {MAX_RESPONSE_BYTES}-byte limit",
        retryable=False,
        big=True,
    ),
    Hostile("resultJson-not-json", _record(resultJson="{not json"), "resultJson is not valid JSON"),
    Hostile("resultJson-not-object", _record(resultJson="[1, 2]"), "must encode a JSON object"),
    Hostile(
        "resultJson-nested-100k-deep",
        _record(resultJson="[" * 100_000 + "]" * 100_000),
        "could not be parsed: RecursionError",
    ),
    Hostile("task-id-dot-dot", _record(taskId="../../etc/passwd"), "has characters outside"),
    Hostile("task-id-absolute-path", _record(taskId="/etc/cron.d/x"), "has characters outside"),
    Hostile("task-id-backslash", _record(taskId="a\\..\\b"), "has characters outside"),
    Hostile(
        "non-utf8-body-http-200",
        Answer(prefix=b'{"code": 200, "msg": "\xff\xfe\xfa", "data": {}}'),
        "not JSON (UnicodeDecodeError",
    ),
    Hostile(
        "non-utf8-body-http-500",
        Answer(status=500, prefix=b"\xff\xfe<html>\x80\x81</html>", content_type="text/html"),
        "server error",
        retryable=True,
    ),
    Hostile(
        "non-utf8-retry-after-header",
        json_answer(
            envelope(None, code=429, msg="slow"), status=429, headers=(("Retry-After", "\xff\xfe"),)
        ),
        "rate limited",
        retryable=True,
    ),
    Hostile(
        "retry-after-nan",
        json_answer(envelope(None, code=429), status=429, headers=(("Retry-After", "nan"),)),
        "rate limited",
        retryable=True,
    ),
    Hostile(
        "retry-after-garbled-date",
        json_answer(
            envelope(None, code=429), status=429, headers=(("Retry-After", "Mon, 99 Foo 9 GMT"),)
        ),
        "rate limited",
        retryable=True,
    ),
    Hostile(
        "body-nested-200k-deep",
        Answer(prefix=b"[" * 200_000 + b"]" * 200_000),
        "not JSON (RecursionError",
    ),
    Hostile(
        "integer-with-5000-digits",
        Answer(prefix=b'{"code": ' + b"9" * 5000 + b"}"),
        "not JSON (ValueError",
    ),
    Hostile("code-is-a-string", json_answer({"code": "two hundred"}), "wrong shape"),
    Hostile("data-is-a-string", json_answer(envelope("not a record")), "could not be parsed"),
    Hostile(
        "body-shorter-than-declared",
        Answer(prefix=b'{"code": 200', declared_length=4096, framing="close"),
        "RemoteProtocolError",
        retryable=True,
    ),
    Hostile("empty-body-http-200", Answer(), "not JSON"),
    Hostile(
        "html-error-page-http-200",
        Answer(prefix=b"<html><body>Gateway</body></html>", content_type="text/html"),
        "not JSON (JSONDecodeError",
    ),
    Hostile(
        "echoes-key-in-msg-401",
        json_answer(envelope(None, code=401, msg=f"invalid key {KEY}"), status=401),
        "invalid key ***",
        retryable=False,
    ),
    Hostile(
        "echoes-key-in-failMsg",
        _record(state="fail", failCode="422", failMsg=f"refused for key {KEY}"),
        "refused for key ***",
        status="failed",
        retryable=False,
    ),
    Hostile("echoes-key-as-task-id", _record(taskId=KEY), "'***' has characters outside"),
    Hostile(
        "echoes-key-escaped-inside-resultJson",
        _escaped_key_inside_result_json(),
        "repeats the API key",
        retryable=False,
    ),
    Hostile(
        "echoes-key-as-json-object-key",
        json_answer({"code": 500, KEY: "x", "msg": {"nested": KEY}}),
        "wrong shape",
    ),
]

CREATE_ANSWERS: list[Hostile] = [
    Hostile("50MB-declared-length", _big_json(), "declares 524288", big=True),
    Hostile(
        "50MB-close-delimited",
        _big_json(framing="close"),
        f"over the {MAX_RESPONSE_BYTES}-byte limit",
        big=True,
    ),
    Hostile(
        "50MB-chunked", _big_json(framing="chunked"), f"over the {MAX_RESPONSE_BYTES}", big=True
    ),
    Hostile(
        "task-id-dot-dot",
        json_answer(envelope({"taskId": "../../etc/passwd"})),
        "no usable taskId",
    ),
    Hostile("task-id-with-slash-and-nul", json_answer(envelope({"taskId": "a/b\x00c"})), "taskId"),
    Hostile(
        "non-utf8-body",
        Answer(prefix=b'{"code": 200, "data": {"taskId": "\xff\xfe"}}'),
        "UnicodeDecodeError",
    ),
    Hostile(
        "body-nested-200k-deep", Answer(prefix=b"[" * 200_000 + b"]" * 200_000), "RecursionError"
    ),
    Hostile(
        "integer-with-5000-digits",
        Answer(prefix=b'{"code": 200, "data": {"taskId": ' + b"7" * 5000 + b"}}"),
        "ValueError",
    ),
    Hostile(
        "echoes-key-in-msg-422",
        json_answer(envelope(None, code=422, msg=f"bad request from {KEY}"), status=422),
        "bad request from ***",
        retryable=False,
    ),
    Hostile("echoes-key-as-task-id", json_answer(envelope({"taskId": KEY})), "'***'"),
    Hostile("empty-body-http-200", Answer(), "not JSON"),
]


def _dispatch(cases: list[Hostile]) -> Any:
    """A poll route answering each case by the ``taskId`` asked for (``case-<index>``)."""
    by_id = {f"case-{index}": case.answer for index, case in enumerate(cases)}

    def route(seen: Seen) -> Answer:
        task_id = parse_qs(urlsplit(seen.target).query).get("taskId", [""])[0]
        return by_id.get(task_id, json_answer(envelope(None, code=404, msg="no"), status=404))

    return route


def _check_event(case: Hostile, events: list[dict[str, Any]]) -> None:
    assert len(events) == 1, events
    (event,) = events
    text = json.dumps(event)  # the triggerer must be able to store it
    assert event["status"] == case.status, event
    assert case.fragment in event["message"], event["message"]
    if case.retryable is not None:
        assert event["retryable"] is case.retryable, event
    assert KEY not in text


@pytest.mark.parametrize("case", POLL_ANSWERS, ids=[case.id for case in POLL_ANSWERS])
async def test_hostile_poll_answer_ends_the_trigger_with_one_clear_event(
    hostile_conn: HostileServer, case: Hostile
) -> None:
    index = POLL_ANSWERS.index(case)
    hostile_conn.route(POLL_PATH, _dispatch(POLL_ANSWERS))

    events = await run_trigger(trigger_for(f"case-{index}"))

    _check_event(case, events)
    polls = len(hostile_conn.seen)
    assert 1 <= polls <= 2  # max_consecutive_errors=1: one retry at most, then give up
    sent = await asyncio.to_thread(hostile_conn.wait_answers, polls)
    if case.big:
        assert case.answer.size > BIG
        assert sent < READ_BOUND, f"the client let {sent} bytes through"


async def test_hostile_triggers_do_not_disturb_a_healthy_one_on_the_same_loop(
    hostile_conn: HostileServer, fake_api: FakeFluxServer
) -> None:
    """The triggerer runs every trigger on one event loop: all end, each with its own event."""
    hostile_conn.route(POLL_PATH, _dispatch(POLL_ANSWERS))
    healthy_id = fake_api.submit({"prompt": "a calm lake"})
    hostile_triggers = [trigger_for(f"case-{index}") for index in range(len(POLL_ANSWERS))]
    healthy = trigger_for(healthy_id, conn_id="flux_default", max_consecutive_errors=3)

    results = await asyncio.gather(*(run_trigger(t) for t in [*hostile_triggers, healthy]))

    for case, events in zip(POLL_ANSWERS, results[:-1], strict=True):
        _check_event(case, events)
    (healthy_event,) = results[-1]
    assert healthy_event["status"] == "success"
    assert healthy_event["task"]["result_urls"]


def _hostile_operator(hostile: HostileServer) -> FluxGenerateImageOperator:
    operator = FluxGenerateImageOperator(
        task_id="generate",
        prompt="a fox in the snow",
        flux_conn_id=HOSTILE_CONN_ID,
        deferrable=True,
        poll_interval=0.01,
        timeout=30,
    )
    operator.hook.client._sleep = lambda seconds: None
    return operator


@pytest.mark.parametrize("case", CREATE_ANSWERS, ids=[case.id for case in CREATE_ANSWERS])
def test_hostile_create_answer_fails_the_task_clearly_after_one_request(
    hostile_conn: HostileServer, case: Hostile
) -> None:
    hostile_conn.route(CREATE_PATH, case.answer)
    context = task_context()

    with pytest.raises(AirflowException) as info:
        _hostile_operator(hostile_conn).execute(context)

    message = str(info.value)
    assert case.fragment in message
    assert KEY not in message
    assert KEY not in repr(info.value.__cause__)
    if case.retryable is False:
        assert isinstance(info.value, AirflowFailException)
    assert isinstance(info.value, (AirflowFailException, FluxTaskError))
    assert [seen.path for seen in hostile_conn.seen] == [CREATE_PATH]
    assert "flux_task_id" not in context["ti"].xcoms  # no task id was accepted
    sent = hostile_conn.wait_answers(1)
    if case.big:
        assert sent < READ_BOUND, f"the client let {sent} bytes through"
