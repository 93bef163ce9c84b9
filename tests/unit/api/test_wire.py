"""The Crun wire mapping: the documented shapes verbatim, and every tolerance rule of API.md."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flux_provider.api.errors import (
    AuthenticationError,
    InsufficientCreditsError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
    UnexpectedStatusError,
)
from flux_provider.api.models import TaskState, validate_input
from flux_provider.api.wire import (
    STATUS_WORDS,
    URL_KEYS,
    Envelope,
    balance_of,
    create_body,
    estimate_of,
    read_answer,
    status_of,
    task_id_of,
    task_info_from_callback,
    task_info_of,
    task_query,
)

KEY = "sk-wire-SECRET-9"
URL = "https://cdn.crun.example/out/image.png"

DOCUMENTED_TASK_INFO = """{
  "code": 200,
  "message": "success",
  "data": {
    "task_id": "d6956973-2f17-43d4-8514-af6cc3a2f55d",
    "provider": "Google",
    "model_version": "nano-banana",
    "status": "running",
    "param": {
      "model": "google/nano-banana",
      "callback_url": null,
      "input": { "prompt": "A scene of urban fantasy art. ...", "output_format": "png",
                 "aspect_ratio": "16:9" }
    },
    "create_at": 1768900378,
    "result": null,
    "duration_s": null,
    "complete_at": null,
    "source": "api"
  }
}"""


def _read(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Envelope:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return read_answer(status, headers or {}, raw, secret=KEY)


def _info(data: dict[str, Any], task_id: str = "task_1") -> Any:
    return task_info_of({"task_id": task_id, **data}, flux_task_id=task_id, secret=KEY)


# -- requests ---------------------------------------------------------------------------


def test_create_body_is_snake_case_and_omits_an_unset_callback() -> None:
    flux_input = validate_input(
        {"prompt": "teapot", "input_urls": ["https://e.x/a.png"], "seed": 3, "guidance": 2.5}
    )
    body = create_body(flux_input, model="flux-2-max", callback_url=None)
    assert body == {
        "model": "flux-2-max",
        "input": {
            "prompt": "teapot",
            "img_urls": ["https://e.x/a.png"],
            "seed": 3,
            "guidance": 2.5,
        },
    }
    with_callback = create_body(flux_input, model="flux-2-max", callback_url="https://cb.x/h")
    assert with_callback["callback_url"] == "https://cb.x/h"


def test_task_query_uses_task_id() -> None:
    assert task_query("task_9") == {"task_id": "task_9"}


# -- the envelope -----------------------------------------------------------------------


def test_documented_task_info_parses_verbatim() -> None:
    envelope = read_answer(200, {}, DOCUMENTED_TASK_INFO.encode(), secret=KEY)
    assert envelope.message == "success"
    info = task_info_of(envelope.data, flux_task_id="d6956973-2f17-43d4-8514-af6cc3a2f55d")
    assert info.flux_task_id == "d6956973-2f17-43d4-8514-af6cc3a2f55d"
    assert info.state is TaskState.RUNNING
    assert info.raw_state == "running"
    assert info.result_urls == []
    assert info.created_at == 1768900378
    assert info.completed_at is None
    assert info.duration_s is None
    assert info.credits is None


def test_documented_create_answer() -> None:
    envelope = _read({"code": 200, "message": "success", "data": {"task_id": "task_12345678"}})
    assert task_id_of(envelope) == "task_12345678"


@pytest.mark.parametrize("key", ["message", "msg"])
def test_the_envelope_message_under_either_key(key: str) -> None:
    with pytest.raises(InsufficientCreditsError) as info:
        _read({"code": 402, key: "top up first", "data": None})
    assert info.value.server_message == "top up first"


def test_the_body_code_decides_over_the_http_status() -> None:
    with pytest.raises(ServerError):
        _read({"code": 500, "message": "boom", "data": None}, status=200)
    assert _read({"code": 200, "message": "success", "data": {}}, status=500).code == 200


def test_a_numeric_string_code_is_read() -> None:
    with pytest.raises(RateLimitedError):
        _read({"code": "429", "message": "slow down"})


def test_403_is_treated_like_401() -> None:
    with pytest.raises(AuthenticationError) as info:
        _read({"code": 403, "message": "key disabled", "data": None}, status=403)
    assert info.value.retryable is False


def test_without_a_code_the_http_status_decides() -> None:
    assert _read({"message": "success", "data": {"balance": 3}}).data == {"balance": 3}
    with pytest.raises(RateLimitedError):
        _read({"message": "slow down"}, status=429)


def test_unlisted_code() -> None:
    with pytest.raises(UnexpectedStatusError, match="418"):
        _read({"code": 418, "message": "teapot"})


def test_a_json_list_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="not an object"):
        _read([1, 2])


def test_the_key_is_scrubbed_from_server_messages() -> None:
    with pytest.raises(AuthenticationError) as info:
        _read({"code": 401, "message": f"bad key {KEY}"})
    assert KEY not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    "data", [{"id": "x"}, {"task_id": ""}, {"task_id": "  "}, None, {"task_id": True}]
)
def test_create_answer_without_a_task_id_is_malformed(data: object) -> None:
    with pytest.raises(MalformedResponseError, match="task_id"):
        task_id_of(Envelope(200, "success", data))


@pytest.mark.parametrize(("sent", "read"), [(12345678, "12345678"), (" task_9 ", "task_9")])
def test_a_numeric_or_padded_task_id_is_read_as_text(sent: object, read: str) -> None:
    assert task_id_of(Envelope(200, "success", {"task_id": sent})) == read
    assert task_info_of({"task_id": sent, "status": "running"}).flux_task_id == read


def test_create_answer_with_path_characters_in_the_id_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="task id"):
        task_id_of(Envelope(200, "success", {"task_id": "../../etc/passwd"}))


# -- status words -----------------------------------------------------------------------

PENDING = ["pending", "queued", "queuing", "waiting", "submitted", "created"]
RUNNING = ["running", "processing", "generating", "in_progress"]
SUCCESS = ["success", "succeeded", "succeed", "completed", "complete", "done", "finished"]
FAILED = ["failed", "fail", "failure", "error", "cancelled", "canceled", "timeout", "expired"]


@pytest.mark.parametrize(
    ("words", "state"),
    [
        (PENDING, TaskState.PENDING),
        (RUNNING, TaskState.RUNNING),
        (SUCCESS, TaskState.SUCCESS),
        (FAILED, TaskState.FAILED),
    ],
)
def test_every_listed_status_word_in_any_case(words: list[str], state: TaskState) -> None:
    for word in words:
        for spelling in (word, word.upper(), word.title(), f"  {word} "):
            assert status_of(spelling) is state, spelling
    assert set(words) == {w for w, s in STATUS_WORDS.items() if s is state}


@pytest.mark.parametrize("word", ["upscaling", "", None, 3, "IN-PROGRESS-ish"])
def test_unknown_status_words_mean_not_ended(word: object) -> None:
    info = _info({"status": word})
    assert info.state is TaskState.UNKNOWN
    assert not info.state.is_terminal


def test_in_progress_spelled_with_a_dash_or_space() -> None:
    assert status_of("In-Progress") is TaskState.RUNNING
    assert status_of("in progress") is TaskState.RUNNING


# -- result URLs ------------------------------------------------------------------------

RESULT_SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("documented media_urls", {"result": {"code": 200, "message": "ok", "media_urls": [URL]}}),
    (
        "result as a JSON string",
        {"result": json.dumps({"code": 200, "message": "ok", "media_urls": [URL]})},
    ),
    ("result a URL string", {"result": URL}),
    ("result a list of URL strings", {"result": [URL]}),
    ("result a list of objects with url", {"result": [{"url": URL, "width": 1024}]}),
    ("result JSON string of a list", {"result": json.dumps([URL])}),
    ("no result: URLs on data", {"result": None, "image_urls": [URL]}),
    ("output list of objects", {"result": {"output": [{"url": URL}]}}),
    *[(f"result.{key} list", {"result": {key: [URL]}}) for key in URL_KEYS],
    *[(f"result.{key} string", {"result": {key: URL}}) for key in URL_KEYS],
]


@pytest.mark.parametrize(("case", "data"), RESULT_SHAPES, ids=[c for c, _ in RESULT_SHAPES])
def test_every_result_shape_gives_the_url(case: str, data: dict[str, Any]) -> None:
    info = _info({"status": "success", **data})
    assert info.result_urls == [URL]
    assert info.failure() is None


def test_media_urls_come_first() -> None:
    other = "https://cdn.crun.example/other.png"
    info = _info({"status": "success", "result": {"images": [other], "media_urls": [URL]}})
    assert info.result_urls == [URL]


def test_only_http_urls_are_results() -> None:
    info = _info({"status": "success", "result": {"media_urls": ["ftp://x/a.png", "a.png", URL]}})
    assert info.result_urls == [URL]


@pytest.mark.parametrize(
    "data",
    [
        {"result": None},
        {"result": {"code": 200, "message": "success"}},
        {"result": ""},
        {"result": "{not json"},
        {"result": {"media_urls": []}},
    ],
)
def test_success_without_a_url_is_a_retryable_error_naming_the_task(data: dict[str, Any]) -> None:
    info = _info({"status": "success", **data}, task_id="task_empty")
    failure = info.failure()
    assert failure is not None
    assert failure.retryable
    assert "task_empty" in str(failure)
    assert "no image URL" in str(failure)


def test_urls_are_ignored_while_running() -> None:
    assert _info({"status": "running", "result": {"media_urls": [URL]}}).result_urls == []


def test_deep_nesting_is_bounded() -> None:
    node: Any = URL
    for _ in range(50):
        node = {"output": node}
    info = _info({"status": "success", "result": node})
    assert info.result_urls == []


# -- failure details --------------------------------------------------------------------

FAILURE_SHAPES: list[tuple[str, dict[str, Any], str | None]] = [
    ("documented result", {"result": {"code": 501, "message": "GPU fell over"}}, "501"),
    ("error_message", {"error_message": "GPU fell over", "error_code": 501}, "501"),
    ("fail_msg", {"fail_msg": "GPU fell over", "fail_code": "501"}, "501"),
    ("error string", {"error": "GPU fell over", "code": 501}, "501"),
    ("error object", {"error": {"message": "GPU fell over", "code": 501}}, "501"),
    ("data message", {"message": "GPU fell over"}, None),
]


@pytest.mark.parametrize(
    ("case", "data", "code"), FAILURE_SHAPES, ids=[c for c, *_ in FAILURE_SHAPES]
)
def test_failure_message_and_code(case: str, data: dict[str, Any], code: str | None) -> None:
    info = _info({"status": "failed", **data})
    assert info.state is TaskState.FAILED
    assert info.fail_msg == "GPU fell over"
    assert info.fail_code == code
    failure = info.failure()
    assert failure is not None
    assert failure.retryable  # 501: a new task may succeed
    assert "GPU fell over" in str(failure)


def test_the_result_comes_before_the_other_places() -> None:
    info = _info(
        {"status": "failed", "result": {"code": 501, "message": "first"}, "error_message": "no"}
    )
    assert (info.fail_code, info.fail_msg) == ("501", "first")


def test_moderation_failure_is_not_retryable() -> None:
    info = _info({"status": "failed", "result": {"code": 422, "message": "flagged by moderation"}})
    failure = info.failure()
    assert failure is not None
    assert not failure.retryable


def test_status_decides_not_the_result_code() -> None:
    info = _info({"status": "success", "result": {"code": 501, "media_urls": [URL]}})
    assert info.state is TaskState.SUCCESS
    assert info.failure() is None


# -- credits and timings ----------------------------------------------------------------


def test_credits_and_timings_with_their_units() -> None:
    info = _info(
        {
            "status": "success",
            "result": {"media_urls": [URL]},
            "credits": 6,
            "create_at": 1768900378,
            "complete_at": 1768900406,
            "duration_s": 28.4,
        }
    )
    assert info.credits == 6
    assert info.created_at == 1768900378
    assert info.completed_at == 1768900406
    assert info.duration_s == 28.4
    summary = info.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary) == {
        "flux_task_id",
        "state",
        "raw_state",
        "result_urls",
        "fail_code",
        "fail_msg",
        "credits",
        "created_at",
        "completed_at",
        "duration_s",
    }


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1768900378, 1768900378),
        (1768900378123, 1768900378.123),
        ("1768900378", 1768900378),
        ("2026-01-20T09:12:58Z", 1768900378),
        ("not a time", None),
        (None, None),
        (0, None),
        (True, None),
    ],
)
def test_epoch_seconds_are_read_tolerantly(value: object, seconds: float | None) -> None:
    info = _info({"status": "running", "create_at": value})
    assert info.created_at == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("credits", ["6.5", 6.5])
def test_credits_as_number_or_numeric_string(credits: object) -> None:
    assert _info({"status": "success", "credits": credits}).credits == 6.5


@pytest.mark.parametrize("credits", ["lots", [], float("nan"), 1e400])
def test_unusable_credits_are_unknown(credits: object) -> None:
    assert _info({"status": "success", "credits": credits}).credits is None


# -- task identity ----------------------------------------------------------------------


def test_an_answer_without_task_id_is_about_the_task_asked() -> None:
    info = task_info_of({"status": "running"}, flux_task_id="task_7")
    assert info.flux_task_id == "task_7"


def test_an_answer_about_another_task_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="not the one asked about"):
        task_info_of({"task_id": "task_8", "status": "running"}, flux_task_id="task_7")


@pytest.mark.parametrize("data", [None, [], "running"])
def test_data_that_is_not_an_object_is_malformed(data: object) -> None:
    with pytest.raises(MalformedResponseError, match="not an object"):
        task_info_of(data, flux_task_id="task_7")


def test_a_key_inside_a_json_string_result_is_refused() -> None:
    inner = json.dumps({"media_urls": [f"https://cdn.example/{KEY}.png"]})
    with pytest.raises(MalformedResponseError, match="repeats the API key") as info:
        _info({"status": "success", "result": inner})
    assert not info.value.retryable
    assert KEY not in str(info.value)


def test_a_key_too_short_to_scrub_does_not_refuse_answers() -> None:
    """A one-letter key is in every answer ("task", "success"): like the scrubbing, the check
    that an answer repeats the key applies only to keys of MIN_SCRUBBED_KEY_CHARS or more."""
    answer = {"task_id": "task_7", "status": "success", "result": {"media_urls": [URL]}}
    info = task_info_of(answer, flux_task_id="task_7", secret="k")
    assert info.result_urls == [URL]


# -- callbacks, balance, estimate -------------------------------------------------------


@pytest.mark.parametrize("enveloped", [False, True])
def test_callbacks_bare_or_enveloped(enveloped: bool) -> None:
    data = {"task_id": "task_cb", "status": "success", "result": {"media_urls": [URL]}}
    payload: Any = {"code": 200, "message": "success", "data": data} if enveloped else data
    for form in (payload, json.dumps(payload), json.dumps(payload).encode()):
        info = task_info_from_callback(form)
        assert info.flux_task_id == "task_cb"
        assert info.result_urls == [URL]


def test_callback_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="not JSON"):
        task_info_from_callback(b"<html>")


def test_documented_balance() -> None:
    envelope = _read({"code": 200, "message": "success", "data": {"balance": 1000}})
    assert balance_of(envelope) == 1000


@pytest.mark.parametrize("data", [{"balance": "12.5"}, 12.5, {"credits": 12.5}])
def test_balance_tolerates_other_forms(data: object) -> None:
    assert balance_of(Envelope(200, "success", data)) == 12.5


def test_balance_without_a_number_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match=r"data\.balance"):
        balance_of(Envelope(200, "success", {"balance": None}))


def test_seen_estimate_answer() -> None:
    envelope = _read(
        {"code": 200, "message": "success", "data": {"credits": 6, "estimated": False}}
    )
    assert estimate_of(envelope) == 6


def test_estimate_without_a_number_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match=r"data\.credits"):
        estimate_of(Envelope(200, "success", {"estimated": True}))


# -- plausible spellings the documentation leaves open ----------------------------------


def test_a_code_sent_as_an_integral_float_is_a_code() -> None:
    with pytest.raises(AuthenticationError):
        _read({"code": 401.0, "message": "invalid key", "data": None})
    assert _read({"code": 200.0, "data": {"task_id": "t"}}).code == 200


@pytest.mark.parametrize("status", [200, 201, 202])
def test_a_2xx_answer_without_a_body_code_is_a_success(status: int) -> None:
    assert _read({"data": {"task_id": "t"}}, status=status).data == {"task_id": "t"}


def test_a_byte_order_mark_before_the_json_is_ignored() -> None:
    body = b"\xef\xbb\xbf" + json.dumps({"code": 200, "data": {"task_id": "t"}}).encode()
    assert task_id_of(_read(body)) == "t"


def test_data_sent_as_a_json_string_is_decoded() -> None:
    envelope = _read(
        {
            "code": 200,
            "data": json.dumps(
                {"task_id": "task_1", "status": "success", "result": {"media_urls": [URL]}}
            ),
        }
    )
    assert task_id_of(envelope) == "task_1"
    assert task_info_of(envelope.data, flux_task_id="task_1").result_urls == [URL]


@pytest.mark.parametrize(
    "result",
    [
        {"code": 501, "msg": "the upstream model timed out"},
        {"code": 501, "error": "the upstream model timed out"},
        {"code": 501, "error": {"message": "the upstream model timed out"}},
        {"code": 501, "errorMessage": "the upstream model timed out"},
        "the upstream model timed out",
        json.dumps("the upstream model timed out"),
    ],
)
def test_a_failure_reason_is_read_wherever_the_result_puts_it(result: object) -> None:
    info = _info({"status": "failed", "result": result})
    assert info.fail_msg == "the upstream model timed out"


@pytest.mark.parametrize("key", ["errorMessage", "failMsg", "ERROR_MESSAGE", "msg"])
def test_a_failure_reason_beside_the_result_is_read_whatever_its_spelling(key: str) -> None:
    info = _info({"status": "failed", "result": None, key: "content refused", "errorCode": 7})
    assert info.fail_msg == "content refused"


@pytest.mark.parametrize(
    "result",
    [
        {"URL": URL},
        {"mediaUrls": [URL]},
        {"Image_Urls": URL},
        [{"image_url": URL}],
        {"data": {"images": [URL]}},
        json.dumps(URL),
        URL,
    ],
)
def test_result_urls_are_found_whatever_the_keys_spelling(result: object) -> None:
    assert _info({"status": "success", "result": result}).result_urls == [URL]


def test_a_null_create_at_falls_back_on_created_at() -> None:
    info = _info({"status": "running", "create_at": None, "created_at": 1768900378})
    assert info.created_at == 1768900378


def test_a_callback_envelope_without_a_code_is_unwrapped() -> None:
    body = {
        "message": "success",
        "data": {"task_id": "task_1", "status": "success", "result": {"media_urls": [URL]}},
    }
    info = task_info_from_callback(json.dumps(body))
    assert (info.flux_task_id, info.result_urls) == ("task_1", [URL])
