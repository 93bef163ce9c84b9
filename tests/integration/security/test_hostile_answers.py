"""Hostile API answers: a clear error or a tolerant reading, never a crash or an unbounded read.

One table of answers in Crun's shapes (the ``{code, message, data}`` envelope,
``task_id``, ``status``, a ``result`` that may be a JSON string, ``media_urls``
and the other URL keys, the failure details), served over loopback by a
purpose-built server. Poll answers go through :class:`FluxTaskTrigger` run to
its end, as the triggerer runs it: the trigger must yield exactly one strict
JSON event of bounded size and nothing may escape its generator. A tolerant
reading (an event ``success``) is then delivered by the operator's
``execute_complete``, which returns the images or fails with a clear error.
Create answers go through the operator's ``execute``: it must fail with an
Airflow exception that says what was wrong, after exactly one create request (a
create is never blindly resent). Balance and estimate answers go through the
connection's Test button and the operator's ``min_balance`` / ``max_credits``
checks: garbage is a clear error and nothing is submitted. The 50 MB bodies
are offered for real; the server counts the bytes it managed to send before
the client hung up.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from flux_provider.api.config import MAX_RESPONSE_BYTES
from flux_provider.api.errors import FluxError
from flux_provider.api.formatting import bytes_text, credits_text
from flux_provider.hooks import FluxHook
from flux_provider.operators import FluxGenerateImageOperator
from flux_provider.operators.failures import FluxTaskError
from flux_provider.testing import FakeFluxServer
from tests.integration.security.hostile import (
    BALANCE_PATH,
    CREATE_PATH,
    ESTIMATE_PATH,
    POLL_PATH,
    Answer,
    HostileServer,
    Seen,
    envelope,
    json_answer,
    success_result,
    task_data,
)
from tests.support.airflow import FakeTI, task_context
from tests.support.security import HOSTILE_CONN_ID, KEY, run_trigger, trigger_for

MIB = 1 << 20
BIG = 50 * MIB
READ_BOUND = 16 * MIB
"""What a capped reader may let through: the 1 MiB cap plus socket buffers, far below 50 MB."""
EVENT_BYTES = 16 * 1024
"""An event about a hostile answer stays this small, whatever the answer held."""
HUGE_EVENT_BYTES = MAX_RESPONSE_BYTES + 64 * 1024
"""An event that carries what the answer held (thousands of URLs) is bounded by the answer cap."""
URL = "https://cdn.example/images/1.png"
UNKNOWN_STATUS_SECONDS = 1.0
"""The deadline of cases whose status is not a word: they poll on until it passes."""


def _big_json(**options: Any) -> Answer:
    return Answer(
        prefix=b'{"code": 200, "message": "', filler=BIG, filler_byte=b"A", suffix=b'"}', **options
    )


def _info(**overrides: Any) -> Answer:
    """A task-info answer about the task asked for (its id is set by the dispatcher)."""
    return json_answer(envelope(task_data(media_urls=[URL], **overrides)))


def _raw_info(data: str) -> Answer:
    """A task-info answer whose ``data`` is raw JSON text (for ``NaN`` and friends)."""
    return Answer(prefix=b'{"code": 200, "message": "success", "data": ' + data.encode() + b"}")


def _escaped(text: str) -> str:
    """``text`` as JSON source with the key's first letter escaped: only a decode reveals it."""
    encoded = json.dumps(text)
    assert KEY in encoded
    return encoded.replace(KEY, "\\u0073" + KEY[1:])


def _escaped_key_inside_json_string_result() -> Answer:
    """The key in a JSON-string ``result``, JSON-escaped twice: only the inner decode shows it."""
    inner = '{"media_urls": [' + _escaped(f"https://cdn.example/{KEY}.png") + "]}"
    assert KEY not in json.dumps(inner)
    return _info(result=inner)


def _escaped_key_inside_json_string_failure() -> Answer:
    inner = '{"code": 501, "message": ' + _escaped(f"bad key {KEY}") + "}"
    assert KEY not in json.dumps(inner)
    return _info(status="failed", result=inner)


def _nested(depth: int, key: str = "images") -> str:
    return '{"' + key + '": ' * depth + json.dumps([URL]) + "}" * depth


def _many_url_objects(count: int) -> str:
    return json.dumps({"images": [{"url": f"https://cdn.example/i/{i}.png"} for i in range(count)]})


def _key_cut_by_truncation() -> dict[str, int]:
    """A status object whose text form holds the key as an object key across the 100-char cut."""
    return {"a" * 60: 0, KEY: 0}


@dataclass(frozen=True)
class Hostile:
    """One hostile answer and what the code under test must make of it.

    ``fragment`` is looked for in the event's message; for a ``success`` event
    (a tolerant reading) in the error the operator raises on delivery, or
    ``None`` when the delivery succeeds with ``urls`` (an exact list or a count).
    """

    id: str
    answer: Answer
    fragment: str | None
    status: str = "error"
    retryable: bool | None = None
    big: bool = False
    urls: list[str] | int = 0
    seconds: float | None = None
    event_bytes: int = EVENT_BYTES
    or_timeout: bool = False
    """The deadline may pass first (under load): a ``timeout`` event is then right too."""


def _no_url(case_id: str, answer: Answer) -> Hostile:
    """A success whose answer holds no usable URL: delivered as a clear, retryable error."""
    return Hostile(case_id, answer, "holds no image URL", status="success", retryable=True)


def _read(case_id: str, answer: Answer, urls: list[str] | int = 1, **options: Any) -> Hostile:
    """A success read tolerantly: the images are delivered."""
    return Hostile(case_id, answer, None, status="success", urls=urls, **options)


def _unknown(case_id: str, status: Any, fragment: str) -> Hostile:
    """A status that is not a word: not ended, polled until the deadline, a timeout event."""
    return Hostile(
        case_id,
        _info(status=status, result=None),
        fragment,
        status="timeout",
        retryable=True,
        seconds=UNKNOWN_STATUS_SECONDS,
    )


POLL_ANSWERS: list[Hostile] = [
    # -- size --------------------------------------------------------------------------
    Hostile("50MB-declared-length", _big_json(), "declares 50 MiB", retryable=False, big=True),
    Hostile(
        "50MB-close-delimited",
        _big_json(framing="close"),
        f"over the {bytes_text(MAX_RESPONSE_BYTES)} limit",
        retryable=False,
        big=True,
    ),
    Hostile(
        "50MB-chunked",
        _big_json(framing="chunked"),
        f"over the {bytes_text(MAX_RESPONSE_BYTES)} limit",
        retryable=False,
        big=True,
    ),
    # -- bytes, headers and framing ------------------------------------------------------
    Hostile(
        "non-utf8-body-http-200",
        Answer(prefix=b'{"code": 200, "message": "\xff\xfe\xfa", "data": {}}'),
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
            envelope(None, code=429, message="slow"),
            status=429,
            headers=(("Retry-After", "\xff\xfe"),),
        ),
        "rate limited",
        status="timeout",
        retryable=True,
        seconds=UNKNOWN_STATUS_SECONDS,
    ),
    Hostile(
        "retry-after-nan",
        json_answer(envelope(None, code=429), status=429, headers=(("Retry-After", "nan"),)),
        "rate limited",
        status="timeout",
        retryable=True,
        seconds=UNKNOWN_STATUS_SECONDS,
    ),
    Hostile(
        "retry-after-garbled-date",
        json_answer(
            envelope(None, code=429), status=429, headers=(("Retry-After", "Mon, 99 Foo 9 GMT"),)
        ),
        "rate limited",
        status="timeout",
        retryable=True,
        seconds=UNKNOWN_STATUS_SECONDS,
    ),
    Hostile(
        "retry-after-1e308-seconds",
        json_answer(envelope(None, code=429), status=429, headers=(("Retry-After", "1e308"),)),
        "rate limited",
        retryable=True,
        seconds=UNKNOWN_STATUS_SECONDS,
        or_timeout=True,
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
    Hostile("body-a-json-list", json_answer([envelope(task_data())]), "a JSON list, not an object"),
    Hostile(
        "echoes-key-in-an-illegal-header-line",
        json_answer(envelope(task_data()), headers=((f"Bad Name {KEY}", "x"),)),
        "illegal header line",
        retryable=True,
    ),
    # -- the envelope ------------------------------------------------------------------
    Hostile(
        "code-is-a-word",
        json_answer({"code": "two hundred"}),
        "data is a NoneType, not an object",
    ),
    Hostile(
        "data-is-a-string", json_answer(envelope("not a task")), "data is a str, not an object"
    ),
    Hostile(
        "data-is-a-json-string-of-a-list",
        json_answer(envelope(json.dumps([task_data(media_urls=[URL])]))),
        "data is a list, not an object",
    ),
    Hostile(
        "http-200-body-code-500",
        json_answer(envelope(None, code=500, message="upstream down")),
        "server error",
        retryable=True,
    ),
    Hostile(
        "code-with-50-digits",
        json_answer(envelope(None, code=10**50)),
        "unexpected code 1" + "0" * 50,
        retryable=False,
    ),
    Hostile(
        "message-800KB",
        json_answer(envelope(None, code=500, message="m" * 800_000), status=500),
        "server error",
        retryable=True,
    ),
    Hostile(
        "message-nested-990-deep",
        Answer(status=500, prefix=b'{"code": 500, "message": ' + b"[" * 990 + b"]" * 990 + b"}"),
        "server error",
        retryable=True,
    ),
    Hostile(
        "echoes-key-in-message-401",
        json_answer(envelope(None, code=401, message=f"invalid key {KEY}"), status=401),
        "invalid key ***",
        retryable=False,
    ),
    Hostile(
        "echoes-key-in-message-http-200-body-403",
        json_answer(envelope(None, code=403, message=f"key {KEY} is disabled")),
        "key *** is disabled",
        retryable=False,
    ),
    Hostile(
        "echoes-key-as-json-object-key",
        json_answer({"code": 500, KEY: "x", "message": {"nested": KEY, KEY: 1}}),
        "server error",
        retryable=True,
    ),
    # -- which task --------------------------------------------------------------------
    Hostile("task-id-dot-dot", _info(task_id="../../etc/passwd"), "not the one asked about"),
    Hostile("task-id-absolute-path", _info(task_id="/etc/cron.d/x"), "not the one asked about"),
    Hostile("task-id-backslash", _info(task_id="a\\..\\b"), "not the one asked about"),
    Hostile(
        "task-id-of-another-task",
        _info(task_id="task_someone_else"),
        "about task 'task_someone_else', not the one asked about",
        retryable=True,
    ),
    Hostile("task-id-500KB", _info(task_id="t" * 500_000), "not the one asked about"),
    Hostile("echoes-key-as-task-id", _info(task_id=KEY), "'***', not the one asked about"),
    Hostile("task-id-a-number-of-another-task", _info(task_id=12345), "not the one asked about"),
    _read("task-id-a-bool", _info(task_id=True), [URL]),
    # -- the status --------------------------------------------------------------------
    _unknown("status-a-number", 42, "last state: 42)"),
    _unknown("status-an-object", {"word": "success"}, "last state: <dict>)"),
    _unknown("status-600KB-string", "x" * 600_000, f"last state: {'x' * 100})"),
    _unknown("status-null", None, "timeout reached"),
    _unknown("status-true", True, "last state: <bool>)"),
    _unknown("status-nested-400-deep", json.loads("[" * 400 + "]" * 400), "last state: <list>)"),
    _unknown("echoes-key-as-status-object-key", {KEY: "success"}, "last state: <dict>)"),
    # -- the result and its URLs -------------------------------------------------------
    _no_url("result-json-string-not-json", _info(result="{not json")),
    _no_url("result-json-string-a-list-of-numbers", _info(result="[1, 2]")),
    _no_url("result-json-string-nested-100k-deep", _info(result="[" * 100_000 + "]" * 100_000)),
    _no_url("result-json-string-nested-500-deep", _info(result=_nested(500))),
    Hostile(
        "result-json-string-900KB-of-url-objects",
        _info(result=_many_url_objects(15_000)),
        "lists 15000 image URLs, more than the 32 a task can make",
        retryable=False,
    ),
    Hostile(
        "media-urls-20000-entries",
        _info(result=success_result([f"https://cdn.example/{i}.png" for i in range(20_000)])),
        "lists 20000 image URLs, more than the 32 a task can make",
        retryable=False,
    ),
    _no_url(
        "media-urls-30000-non-string-items",
        _info(result=success_result([1, None, True, {"x": 1}, ["nested"], 3.5] * 5_000)),  # type: ignore[list-item]
    ),
    _read(
        "media-urls-non-strings-around-one-url",
        _info(result=success_result([1, None, {"x": 1}, ["no url"], URL, 2.5])),  # type: ignore[list-item]
        [URL],
    ),
    _no_url(
        "media-urls-hostile-schemes",
        _info(
            result=success_result(
                [
                    "file:///etc/passwd",
                    "javascript:alert(document.cookie)",
                    "data:image/png;base64,iVBORw0KGgo=",
                    "ftp://cdn.example/a.png",
                    "//cdn.example/a.png",
                    "/relative/a.png",
                    "gopher://127.0.0.1:70/_x",
                ]
            )
        ),
    ),
    _read(
        "media-urls-one-900KB-url",
        _info(result=success_result(["https://cdn.example/" + "a" * 900_000])),
        1,
        event_bytes=HUGE_EVENT_BYTES,
    ),
    _read(
        "result-code-501-but-status-success",
        _info(result={"code": 501, "message": "boom", "media_urls": [URL]}),
        [URL],
    ),
    Hostile(
        "result-code-200-but-status-failed",
        _info(status="failed", result=success_result([URL])),
        "the generation failed with fail code 200",
        status="failed",
        retryable=True,
    ),
    # -- failure details ---------------------------------------------------------------
    Hostile(
        "echoes-key-in-result-message",
        _info(status="failed", result={"code": 422, "message": f"refused for key {KEY}"}),
        "refused for key ***",
        status="failed",
        retryable=False,
    ),
    Hostile(
        "echoes-key-in-fail_msg",
        _info(status="failed", result=None, fail_code="422", fail_msg=f"refused for key {KEY}"),
        "refused for key ***",
        status="failed",
        retryable=False,
    ),
    Hostile(
        "echoes-key-in-error_message",
        _info(status="failed", result=None, error_message=f"no credit for {KEY}", error_code=402),
        "no credit for ***",
        status="failed",
        retryable=False,
    ),
    Hostile(
        "echoes-key-in-error-object",
        _info(status="failed", result=None, error={"message": f"bad {KEY}", "code": 501}),
        "bad ***",
        status="failed",
        retryable=True,
    ),
    Hostile(
        "echoes-key-plain-inside-json-string-result",
        _info(status="failed", result=json.dumps({"code": 501, "message": f"key {KEY} used"})),
        "key *** used",
        status="failed",
        retryable=True,
    ),
    Hostile(
        "echoes-key-escaped-inside-json-string-result",
        _escaped_key_inside_json_string_result(),
        "repeats the API key",
        retryable=False,
    ),
    Hostile(
        "echoes-key-escaped-inside-json-string-failure",
        _escaped_key_inside_json_string_failure(),
        "repeats the API key",
        retryable=False,
    ),
    Hostile(
        "fail-msg-900KB",
        _info(status="failed", result={"code": 501, "message": "f" * 900_000}),
        "the generation failed with fail code 501",
        status="failed",
        retryable=True,
    ),
    Hostile(
        "fail-code-and-message-objects",
        _info(status="failed", result={"code": {"deep": [1]}, "message": {"text": ["x"]}}),
        "the generation failed",
        status="failed",
        retryable=True,
    ),
    Hostile(
        "fail-code-300KB-of-digits",
        _info(status="failed", result={"code": "9" * 300_000, "message": "x"}),
        "with fail code " + "9" * 100,
        status="failed",
        retryable=True,
    ),
    # -- credits and times -------------------------------------------------------------
    _read(
        "credits-and-times-huge",
        _info(credits=1e308, create_at=1e308, complete_at=1e300, duration_s=1e308),
        [URL],
    ),
    _read(
        "credits-and-times-nan-and-infinity",
        _raw_info(
            json.dumps(task_data("ID", media_urls=[URL]))[:-1]
            + ', "credits": NaN, "create_at": Infinity, "complete_at": -Infinity,'
            + ' "duration_s": NaN}'
        ),
        [URL],
    ),
    _read(
        "credits-and-times-negative",
        _info(credits=-5, create_at=-1, complete_at=-1_700_000_000, duration_s=-10),
        [URL],
    ),
    _read(
        "credits-and-times-garbage",
        _info(credits="lots", create_at="yesterday", complete_at={"s": 1}, duration_s=[1]),
        [URL],
    ),
    _read(
        "credits-and-times-400-digit-integers",
        _info(credits=10**400, create_at=10**400, complete_at=-(10**400), duration_s=10**400),
        [URL],
    ),
    _read(
        "times-iso-out-of-range",
        _info(create_at="0001-01-01T00:00:00+14:00", complete_at="9999-12-31T23:59:59-14:00"),
        [URL],
    ),
]


CREATE_ANSWERS: list[Hostile] = [
    Hostile("50MB-declared-length", _big_json(), "declares 50 MiB", big=True),
    Hostile(
        "50MB-close-delimited",
        _big_json(framing="close"),
        f"over the {bytes_text(MAX_RESPONSE_BYTES)} limit",
        big=True,
    ),
    Hostile(
        "50MB-chunked",
        _big_json(framing="chunked"),
        f"over the {bytes_text(MAX_RESPONSE_BYTES)}",
        big=True,
    ),
    Hostile(
        "task-id-dot-dot",
        json_answer(envelope({"task_id": "../../etc/passwd"})),
        "unusable task_id",
    ),
    Hostile(
        "task-id-with-slash-and-nul",
        json_answer(envelope({"task_id": "a/b\x00c"})),
        "unusable task_id",
    ),
    Hostile("task-id-500KB", json_answer(envelope({"task_id": "t" * 500_000})), "unusable task_id"),
    Hostile("task-id-missing", json_answer(envelope({"id": "task_1"})), "has no task_id"),
    Hostile("task-id-a-fraction", json_answer(envelope({"task_id": 12.5})), "has no task_id"),
    Hostile(
        "data-a-json-string-of-a-string",
        json_answer(envelope(json.dumps(json.dumps("task_1")))),
        "has no task_id",
    ),
    Hostile(
        "non-utf8-body",
        Answer(prefix=b'{"code": 200, "data": {"task_id": "\xff\xfe"}}'),
        "UnicodeDecodeError",
    ),
    Hostile(
        "body-nested-200k-deep", Answer(prefix=b"[" * 200_000 + b"]" * 200_000), "RecursionError"
    ),
    Hostile(
        "integer-with-5000-digits",
        Answer(prefix=b'{"code": 200, "data": {"task_id": ' + b"7" * 5000 + b"}}"),
        "ValueError",
    ),
    Hostile(
        "echoes-key-in-message-422",
        json_answer(envelope(None, code=422, message=f"bad request from {KEY}"), status=422),
        "bad request from ***",
        retryable=False,
    ),
    Hostile(
        "echoes-key-in-message-http-200-body-401",
        json_answer(envelope(None, code=401, message=f"invalid key {KEY}")),
        "invalid key ***",
        retryable=False,
    ),
    Hostile(
        "http-200-body-code-402",
        json_answer(envelope(None, code=402, message="insufficient credits")),
        "insufficient credits",
        retryable=False,
    ),
    Hostile("echoes-key-as-task-id", json_answer(envelope({"task_id": KEY})), "'***'"),
    Hostile(
        "echoes-key-in-an-illegal-header-line",
        json_answer(envelope({"task_id": "task_1"}), headers=((f"Bad Name {KEY}", "x"),)),
        "illegal header line",
    ),
    Hostile("empty-body-http-200", Answer(), "not JSON"),
]


def _dispatch(cases: list[Hostile]) -> Any:
    """A poll route answering each case by the ``task_id`` asked for (``case-<index>``).

    An answer about the task named ``task_hostile_1`` or ``ID`` is rewritten to
    be about the task asked for, so only the cases meant to be about another
    task are.
    """
    by_id = {f"case-{index}": case.answer for index, case in enumerate(cases)}

    def route(seen: Seen) -> Answer:
        task_id = parse_qs(urlsplit(seen.target).query).get("task_id", [""])[0]
        answer = by_id.get(task_id)
        if answer is None:
            return json_answer(envelope(None, code=404, message="no such task"), status=404)
        for placeholder in (b'"task_hostile_1"', b'"ID"'):
            if placeholder in answer.prefix[:200_000]:
                prefix = answer.prefix.replace(placeholder, json.dumps(task_id).encode(), 1)
                return Answer(**{**answer.__dict__, "prefix": prefix})
        return answer

    return route


def _expected_polls(case: Hostile, event: dict[str, Any], polls: int) -> bool:
    if case.or_timeout and event["status"] == "timeout":
        return polls >= 1
    if event["status"] in ("success", "failed"):
        return polls == 1
    if event["status"] == "error":
        # max_consecutive_errors=1: one transient error absorbed, then give up.
        return polls == (2 if event["retryable"] else 1)
    return polls >= 2  # timeout: polled on until the deadline


def _check_event(case: Hostile, events: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(events) == 1, events
    (event,) = events
    text = json.dumps(event, allow_nan=False)  # the triggerer must be able to store it
    assert len(text) <= case.event_bytes, f"a {len(text)}-byte event"
    if case.or_timeout and event["status"] == "timeout":
        case = Hostile(case.id, case.answer, "timeout reached", status="timeout", retryable=True)
    assert event["status"] == case.status, event
    assert KEY not in text
    task = event["task"]
    if case.status == "success":
        assert event["message"] is None
        urls = task["result_urls"]
        assert (len(urls) if isinstance(case.urls, int) else urls) == case.urls, urls[:3]
        assert all(url.startswith("https://") for url in urls)
    else:
        assert case.fragment is not None
        assert case.fragment in event["message"], event["message"][:2000]
        if case.retryable is not None:
            assert event["retryable"] is case.retryable, event
    if task is not None:
        for name in ("credits", "created_at", "completed_at", "duration_s"):
            assert task[name] is None or isinstance(task[name], float), (name, task[name])
    return event


def _hostile_operator(**options: Any) -> FluxGenerateImageOperator:
    operator = FluxGenerateImageOperator(
        task_id="generate",
        prompt="a fox in the snow",
        flux_conn_id=HOSTILE_CONN_ID,
        deferrable=True,
        poll_interval=0.01,
        timeout=30,
        **options,
    )
    operator.hook.client._sleep = lambda seconds: None
    return operator


def _deliver(case: Hostile, event: dict[str, Any]) -> None:
    """The operator resumes with a ``success`` event: images delivered, or a clear error."""
    operator = _hostile_operator()
    context = task_context()
    if case.fragment is None:
        result = operator.execute_complete(context, event)
        assert result["result_urls"] == event["task"]["result_urls"]
        assert KEY not in json.dumps(result)
        return
    with pytest.raises(AirflowException) as info:
        operator.execute_complete(context, event)
    assert case.fragment in str(info.value)
    assert event["flux_task_id"] in str(info.value)  # the error names the task
    assert isinstance(info.value, FluxTaskError if case.retryable else AirflowFailException)
    assert KEY not in str(info.value)


def _trigger(case: Hostile, index: int) -> Any:
    if case.seconds is None:
        return trigger_for(f"case-{index}")
    return trigger_for(f"case-{index}", deadline=time.time() + case.seconds)


@pytest.mark.parametrize("case", POLL_ANSWERS, ids=[case.id for case in POLL_ANSWERS])
async def test_hostile_poll_answer_ends_the_trigger_with_one_clear_event(
    hostile_conn: HostileServer, case: Hostile
) -> None:
    index = POLL_ANSWERS.index(case)
    hostile_conn.route(POLL_PATH, _dispatch(POLL_ANSWERS))

    events = await run_trigger(_trigger(case, index))

    event = _check_event(case, events)
    polls = len(hostile_conn.seen)
    assert _expected_polls(case, event, polls), f"{polls} polls"
    assert event["polls"] == polls
    sent = await asyncio.to_thread(hostile_conn.wait_answers, polls)
    if case.big:
        assert case.answer.size > BIG
        assert sent < READ_BOUND, f"the client let {sent} bytes through"
    if case.status == "success":
        await asyncio.to_thread(_deliver, case, event)


async def test_hostile_triggers_do_not_disturb_a_healthy_one_on_the_same_loop(
    hostile_conn: HostileServer, fake_api: FakeFluxServer
) -> None:
    """The triggerer runs every trigger on one event loop: all end, each with its own event."""
    hostile_conn.route(POLL_PATH, _dispatch(POLL_ANSWERS))
    healthy_id = fake_api.submit({"prompt": "a calm lake"})
    hostile_triggers = [_trigger(case, index) for index, case in enumerate(POLL_ANSWERS)]
    healthy = trigger_for(healthy_id, conn_id="flux_default", max_consecutive_errors=3)

    results = await asyncio.gather(*(run_trigger(t) for t in [*hostile_triggers, healthy]))

    for case, events in zip(POLL_ANSWERS, results[:-1], strict=True):
        _check_event(case, events)
    (healthy_event,) = results[-1]
    assert healthy_event["status"] == "success"
    assert healthy_event["task"]["result_urls"]


async def test_no_part_of_the_key_survives_in_a_truncated_status(
    hostile_conn: HostileServer,
) -> None:
    """A status object echoing the key as an object key, cut by the 100-character limit."""
    hostile_conn.route(
        POLL_PATH, _dispatch([_unknown("cut", _key_cut_by_truncation(), "timeout reached")])
    )

    (event,) = await run_trigger(trigger_for("case-0", deadline=time.time() + 0.3))

    secret_part = KEY.rsplit("-", 1)[1]
    text = json.dumps(event)
    assert event["status"] in ("timeout", "error")
    assert secret_part[:8] not in text, event["last_state"]


@pytest.mark.parametrize("case", CREATE_ANSWERS, ids=[case.id for case in CREATE_ANSWERS])
def test_hostile_create_answer_fails_the_task_clearly_after_one_request(
    hostile_conn: HostileServer, case: Hostile
) -> None:
    hostile_conn.route(CREATE_PATH, case.answer)
    ti = FakeTI()

    with pytest.raises(AirflowException) as info:
        _hostile_operator().execute(task_context(ti))

    message = str(info.value)
    assert case.fragment is not None
    assert case.fragment in message
    assert len(message) < EVENT_BYTES
    assert KEY not in message
    assert KEY not in repr(info.value.__cause__)
    if case.retryable is False:
        assert isinstance(info.value, AirflowFailException)
    assert isinstance(info.value, (AirflowFailException, FluxTaskError))
    assert [seen.path for seen in hostile_conn.seen] == [CREATE_PATH]
    assert "flux_task_id" not in ti.xcoms  # no task id was accepted
    sent = hostile_conn.wait_answers(1)
    if case.big:
        assert sent < READ_BOUND, f"the client let {sent} bytes through"


# -- balance and estimate ----------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A hostile balance or estimate answer: a tolerant ``reading``, or an error ``fragment``."""

    id: str
    answer: Answer
    reading: float | None = None
    fragment: str | None = None


def _figure(data: Any, **options: Any) -> Answer:
    return json_answer(envelope(data), **options)


def _raw_figure(text: str) -> Answer:
    return Answer(prefix=b'{"code": 200, "message": "success", "data": ' + text.encode() + b"}")


def _figures(name: str) -> list[Figure]:
    """The hostile answers of the ``balance`` or ``estimate`` endpoint (``data.<name>``)."""
    absent = f"no number under data.{name}"
    return [
        Figure("a-word", _figure({name: "plenty"}), fragment=absent),
        Figure("nan", _raw_figure(f'{{"{name}": NaN}}'), fragment=absent),
        Figure("infinity", _raw_figure(f'{{"{name}": 1e999}}'), fragment=absent),
        Figure("400-digit-integer", _figure({name: 10**400}), fragment=absent),
        Figure("900KB-of-digits", _figure({name: "9" * 900_000}), fragment=absent),
        Figure("null", _figure({name: None}), fragment=absent),
        Figure("true", _figure({name: True}), fragment=absent),
        Figure("an-object", _figure({name: {"amount": 5}}), fragment=absent),
        Figure("data-a-list", _figure([1, 2]), fragment=absent),
        Figure("data-missing", json_answer({"code": 200, "message": "success"}), fragment=absent),
        # A balance may be in debt; a task cannot cost less than nothing.
        Figure("negative", _figure({name: -50}), reading=-50.0)
        if name == "balance"
        else Figure("negative", _figure({name: -50}), fragment=absent),
        Figure("numeric-string", _figure({name: " 12.5 "}), reading=12.5),
        Figure("data-a-bare-number", _figure(7), reading=7.0),
        Figure("huge", _figure({name: 1e308}), reading=1e308),
        Figure(
            "echoes-key-401",
            json_answer(envelope(None, code=401, message=f"invalid key {KEY}"), status=401),
            fragment="invalid key ***",
        ),
        Figure(
            "echoes-key-as-the-figure",
            _figure({name: KEY}),
            fragment=absent,
        ),
        Figure("50MB-chunked", _big_json(framing="chunked"), fragment="MiB limit"),
        Figure("not-json", Answer(prefix=b"<html>502</html>"), fragment="not JSON"),
    ]


BALANCE_ANSWERS = _figures("balance")
ESTIMATE_ANSWERS = _figures("credits")


def _assert_refused_before_creating(
    hostile_conn: HostileServer, path: str, case: Figure, **credit_check: float
) -> None:
    """An operator whose credit check reads ``case`` at ``path`` fails and creates no task."""
    hostile_conn.route(path, case.answer)
    ti = FakeTI()

    with pytest.raises(AirflowException) as info:
        _hostile_operator(**credit_check).execute(task_context(ti))

    assert case.fragment is not None
    assert case.fragment in str(info.value)
    assert KEY not in str(info.value)
    paths = [seen.path for seen in hostile_conn.seen]
    assert CREATE_PATH not in paths
    assert 1 <= len(paths) <= 4  # the read is retried (at most the policy's 4 attempts)
    assert set(paths) == {path}
    assert "flux_task_id" not in ti.xcoms


@pytest.mark.parametrize("case", BALANCE_ANSWERS, ids=[case.id for case in BALANCE_ANSWERS])
def test_hostile_balance_answer_on_the_test_button(
    hostile_conn: HostileServer, case: Figure
) -> None:
    """The Test button asks for the balance once: a reading, or a clear refusal."""
    hostile_conn.route(BALANCE_PATH, case.answer)

    ok, message = FluxHook(flux_conn_id=HOSTILE_CONN_ID).test_connection()

    assert KEY not in message
    assert len(message) < EVENT_BYTES
    assert [seen.path for seen in hostile_conn.seen] == [BALANCE_PATH]
    if case.reading is not None:
        assert ok, message
        assert f"the account has {credits_text(case.reading)} credits" in message
    else:
        assert not ok, message
        assert case.fragment is not None
        assert case.fragment in message
        assert BALANCE_PATH in message


@pytest.mark.parametrize(
    "case", [c for c in BALANCE_ANSWERS if c.reading is None], ids=lambda case: case.id
)
def test_hostile_balance_answer_submits_nothing(hostile_conn: HostileServer, case: Figure) -> None:
    """``min_balance`` with an unreadable balance: the task fails and no task is created."""
    _assert_refused_before_creating(hostile_conn, BALANCE_PATH, case, min_balance=1)


def test_a_negative_balance_is_below_any_min_balance(hostile_conn: HostileServer) -> None:
    hostile_conn.route(BALANCE_PATH, _figure({"balance": -50}))

    with pytest.raises(AirflowFailException, match="has -50 credits, below min_balance=0"):
        _hostile_operator(min_balance=0).execute(task_context())

    assert [seen.path for seen in hostile_conn.seen] == [BALANCE_PATH]


@pytest.mark.parametrize("case", ESTIMATE_ANSWERS, ids=[case.id for case in ESTIMATE_ANSWERS])
def test_hostile_estimate_answer_is_read_or_refused(
    hostile_conn: HostileServer, case: Figure
) -> None:
    hostile_conn.route(ESTIMATE_PATH, case.answer)
    hook = FluxHook(flux_conn_id=HOSTILE_CONN_ID)
    hook.client._sleep = lambda seconds: None

    if case.reading is not None:
        assert hook.estimate_credits({"prompt": "a fox"}) == case.reading
        return
    with pytest.raises(FluxError) as info:
        hook.estimate_credits({"prompt": "a fox"})
    assert case.fragment is not None
    assert case.fragment in str(info.value)
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)


@pytest.mark.parametrize(
    "case", [c for c in ESTIMATE_ANSWERS if c.reading is None], ids=lambda case: case.id
)
def test_hostile_estimate_answer_submits_nothing(hostile_conn: HostileServer, case: Figure) -> None:
    """``max_credits`` with an unreadable estimate: the task fails and no task is created."""
    _assert_refused_before_creating(hostile_conn, ESTIMATE_PATH, case, max_credits=100)


def test_a_huge_estimate_is_above_any_max_credits(hostile_conn: HostileServer) -> None:
    hostile_conn.route(ESTIMATE_PATH, _figure({"credits": 1e308}))

    with pytest.raises(AirflowFailException, match="above max_credits=100"):
        _hostile_operator(max_credits=100).execute(task_context())

    assert [seen.path for seen in hostile_conn.seen] == [ESTIMATE_PATH]


def test_the_catalogue_counts() -> None:
    """Ids are unique within each table; the totals are what docs/security.md quotes."""
    for table in (POLL_ANSWERS, CREATE_ANSWERS, BALANCE_ANSWERS, ESTIMATE_ANSWERS):
        ids = [case.id for case in table]
        assert len(ids) == len(set(ids))
    total = len(POLL_ANSWERS) + len(CREATE_ANSWERS) + len(BALANCE_ANSWERS) + len(ESTIMATE_ANSWERS)
    print(
        f"\nhostile answers: {len(POLL_ANSWERS)} task-info, {len(CREATE_ANSWERS)} create, "
        f"{len(BALANCE_ANSWERS)} balance, {len(ESTIMATE_ANSWERS)} estimate: {total} in all"
    )
    assert total >= 100
