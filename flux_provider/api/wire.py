"""The Crun task API's wire format: the only module that knows its field names and words.

Documented by the service (docs.crun.ai, see ``reference/API.md``): the
envelope ``{code, message, data}``; ``CreateTask`` with ``{model, input,
callback_url}`` answering ``data.task_id``; ``TaskInfo?task_id=`` answering
``task_id``, ``status``, ``param``, ``result``, ``create_at`` / ``complete_at``
(epoch seconds) and ``duration_s``; the balance as ``data.balance``.

Not documented, so read by tolerance rules instead of a schema: the status
words (read case-insensitively; an unknown word means "not ended"), where the
image URLs sit (``result.media_urls`` first, then every shape listed in
:data:`URL_KEYS`, a JSON string included), the failure's message and code, the
``credits`` a task cost, the estimate's answer, and callbacks that carry either
the bare ``data`` object or the whole envelope. Nothing here imports Airflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from flux_provider.api.errors import MalformedResponseError, error_for_code
from flux_provider.api.models import (
    Flux2MaxInput,
    TaskInfo,
    TaskState,
    check_task_id,
    describe_validation_error,
)
from flux_provider.api.readers import (
    MIN_SCRUBBED_KEY_CHARS,
    decoded_json,
    epoch_seconds,
    finite_number,
    is_http_url,
    scrub,
)
from flux_provider.api.retry import parse_retry_after

TASK_ID_PARAM: Final = "task_id"
"""The query parameter of ``TaskInfo`` naming the task."""

STATUS_WORDS: Final[Mapping[str, TaskState]] = {
    **dict.fromkeys(
        ("pending", "queued", "queuing", "waiting", "submitted", "created"), TaskState.PENDING
    ),
    **dict.fromkeys(("running", "processing", "generating", "in_progress"), TaskState.RUNNING),
    **dict.fromkeys(
        ("success", "succeeded", "succeed", "completed", "complete", "done", "finished"),
        TaskState.SUCCESS,
    ),
    **dict.fromkeys(
        (
            "failed",
            "fail",
            "failure",
            "error",
            "cancelled",
            "canceled",
            "timeout",
            "expired",
        ),
        TaskState.FAILED,
    ),
}
"""Every status word the provider understands (lower case); any other is ``UNKNOWN``."""

URL_KEYS: Final = (
    "media_urls",
    "images",
    "image_urls",
    "urls",
    "result_urls",
    "output",
    "outputs",
    "image",
    "image_url",
    "url",
    "result",
    "data",
)
"""Keys under which an object may carry result URLs, in the order they are tried; matched
whatever their case and underscores (``resultUrls``, ``URL``)."""

_FAIL_MESSAGE_KEYS: Final = ("error_message", "fail_msg", "error", "message", "msg")
"""Where a failure's reason may sit (in ``result``, then in ``data``), matched like URL_KEYS."""
_FAIL_CODE_KEYS: Final = ("error_code", "fail_code", "code")
_MAX_URL_DEPTH = 6
MAX_RESULT_URLS = 32
"""A task makes a handful of images; an answer listing more is refused, not downloaded."""


@dataclass(frozen=True)
class Envelope:
    """An answer whose ``code`` said success: its message and ``data``."""

    code: int
    message: str
    data: Any


def status_of(word: object) -> TaskState:
    """The state a status word means; unknown words (and none) are ``UNKNOWN``."""
    if not isinstance(word, str):
        return TaskState.UNKNOWN
    key = word.strip().lower().replace("-", "_").replace(" ", "_")
    return STATUS_WORDS.get(key, TaskState.UNKNOWN)


# -- requests ---------------------------------------------------------------------------


def input_object(flux_input: Flux2MaxInput) -> dict[str, Any]:
    """The ``input`` object of a request: Crun calls the reference images ``img_urls``."""
    parameters = flux_input.parameters()
    if "input_urls" in parameters:
        parameters["img_urls"] = parameters.pop("input_urls")
    return parameters


def create_body(
    flux_input: Flux2MaxInput, *, model: str, callback_url: str | None
) -> dict[str, Any]:
    """The body of ``CreateTask`` (and of ``estimate-credits``); no ``callback_url`` if unset."""
    body: dict[str, Any] = {"model": model, "input": input_object(flux_input)}
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body


def task_query(flux_task_id: str) -> dict[str, str]:
    """The query string of ``TaskInfo``."""
    return {TASK_ID_PARAM: flux_task_id}


# -- answers ----------------------------------------------------------------------------


def _folded(key: object) -> str:
    """A key as compared: ``resultUrls``, ``result_urls`` and ``RESULT_URLS`` are one key."""
    return str(key).lower().replace("_", "")


def _pick(node: Mapping[Any, Any], keys: tuple[str, ...]) -> list[Any]:
    """The values of ``node`` under ``keys`` (whatever their case and underscores), in order."""
    folded = {_folded(key): value for key, value in node.items()}
    return [folded[_folded(key)] for key in keys if _folded(key) in folded]


def _first(node: Mapping[Any, Any], *keys: str) -> Any:
    """The first value of ``node`` under ``keys`` (as :func:`_pick` matches them) that is not
    ``null``, else ``None``."""
    return next((value for value in _pick(node, keys) if value is not None), None)


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def read_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    flux_task_id: str | None = None,
) -> Envelope:
    """Turn one raw answer into an :class:`Envelope` with code 200, or raise its error.

    The body's ``code`` decides over the HTTP status (an HTTP 200 carrying code
    500 is a server error); a body without a usable code falls back on the HTTP
    status. The key is scrubbed from every string of the answer before anything
    reads it, so a server that echoes it cannot put it into an error, a log,
    XCom or an event.
    """
    retry_after = parse_retry_after(headers.get("retry-after"))
    try:
        # ValueError covers bad UTF-8, bad JSON and over-long integers; RecursionError, nesting.
        payload = scrub(json.loads(body.decode("utf-8-sig")), secret)
    except (ValueError, RecursionError) as exc:
        if status >= 300:
            raise error_for_code(
                status, flux_task_id=flux_task_id, retry_after=retry_after
            ) from None
        raise MalformedResponseError(
            f"the API answered HTTP {status} with a body that is not JSON "
            f"({type(exc).__name__}, {len(body)} bytes)",
            status_code=status,
            flux_task_id=flux_task_id,
        ) from None
    if not isinstance(payload, dict):
        if status >= 300:
            raise error_for_code(status, flux_task_id=flux_task_id, retry_after=retry_after)
        raise MalformedResponseError(
            f"the API's answer is a JSON {type(payload).__name__}, not an object",
            status_code=status,
            flux_task_id=flux_task_id,
        )
    code = _code(payload.get("code"))
    if code is None:
        code = 200 if 200 <= status < 300 else status
    text = payload.get("message") or payload.get("msg") or ""
    message = text if isinstance(text, str) else json.dumps(text)
    if secret:
        message = message.replace(secret, "***")
    if code != 200:
        raise error_for_code(
            code, message[:500], flux_task_id=flux_task_id, retry_after=retry_after
        )
    return Envelope(code=code, message=message, data=decoded_json(payload.get("data")))


def _task_id(value: Any) -> str | None:
    """A task id as sent: a non-empty string, or a number (read as its digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def task_id_of(envelope: Envelope) -> str:
    """The ``task_id`` of a ``CreateTask`` answer."""
    data = envelope.data
    task_id = _task_id(_first(data, "task_id")) if isinstance(data, dict) else None
    if task_id is None:
        raise MalformedResponseError("the CreateTask answer has no task_id in its data")
    try:
        return check_task_id(task_id)
    except ValueError as exc:
        raise MalformedResponseError(
            f"the CreateTask answer has an unusable task_id: {exc}"
        ) from None


def _status_word(value: Any) -> str:
    """The status as sent, for logs and the return value: only scalars are kept as text."""
    if isinstance(value, str):
        return value[:100]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)[:100]
    return "" if value is None else f"<{type(value).__name__}>"


def _urls(node: Any, depth: int = 0) -> list[str]:
    """Every result URL in ``node``, in any shape :data:`URL_KEYS` describes."""
    if depth > _MAX_URL_DEPTH:
        return []
    node = decoded_json(node)
    if isinstance(node, str):
        return [node.strip()] if is_http_url(node.strip()) else []
    if isinstance(node, list):
        return [url for item in node for url in _urls(item, depth + 1)]
    if isinstance(node, dict):
        for value in _pick(node, URL_KEYS):
            found = _urls(value, depth + 1)
            if found:
                return found
    return []


def _first_text(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, dict):
            value = _first(value, "message", "msg")
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                return text
    return None


def _failure_details(data: Mapping[str, Any], result: Any) -> tuple[str | None, str | None]:
    """The failure's code and message: ``result`` first, then the other places, all in data."""
    details = result if isinstance(result, dict) else {}
    # A failed task's result may be the reason itself, as plain text.
    reason = result if isinstance(result, str) and not is_http_url(result.strip()) else None
    error = _first(data, "error")
    message = _first_text(
        *_pick(details, _FAIL_MESSAGE_KEYS), reason, *_pick(data, _FAIL_MESSAGE_KEYS)
    )
    code = _first_text(
        *_pick(details, ("code", *_FAIL_CODE_KEYS)),
        *_pick(data, _FAIL_CODE_KEYS),
        *(_pick(error, ("code",)) if isinstance(error, dict) else ()),
    )
    return code, message


def task_info_of(data: Any, *, flux_task_id: str | None = None, secret: str = "") -> TaskInfo:
    """A ``TaskInfo`` ``data`` object (or a callback's) as a :class:`TaskInfo`.

    ``flux_task_id`` is the task asked about: it stands in for an answer
    without ``task_id`` and must match one that has it.
    """
    if not isinstance(data, dict):
        raise MalformedResponseError(
            f"the task-info answer's data is a {type(data).__name__}, not an object",
            flux_task_id=flux_task_id,
        )
    task_id = _task_id(_first(data, "task_id")) or flux_task_id
    if not task_id:
        raise MalformedResponseError("the task-info answer names no task_id")
    if flux_task_id is not None and task_id != flux_task_id:
        raise MalformedResponseError(
            f"the task-info answer is about task {task_id[:60]!r}, not the one asked about",
            flux_task_id=flux_task_id,
        )
    raw_state = data.get("status")
    state = status_of(raw_state)
    result = decoded_json(data.get("result"))
    fail_code, fail_msg = (
        _failure_details(data, result) if state is TaskState.FAILED else (None, None)
    )
    urls = (_urls(result) or _urls(data)) if state is TaskState.SUCCESS else []
    if len(urls) > MAX_RESULT_URLS:
        raise MalformedResponseError(
            f"the task-info answer lists {len(urls)} image URLs, more than the "
            f"{MAX_RESULT_URLS} a task can make: refusing it",
            flux_task_id=flux_task_id,
            retryable=False,
        )
    try:
        info = TaskInfo(
            flux_task_id=task_id,
            state=state,
            raw_state=_status_word(raw_state),
            result_urls=urls,
            fail_code=fail_code[:100] if fail_code else None,
            fail_msg=fail_msg[:2000] if fail_msg else None,
            credits=finite_number(data.get("credits")),
            created_at=epoch_seconds(_first(data, "create_at", "created_at")),
            completed_at=epoch_seconds(_first(data, "complete_at", "completed_at")),
            duration_s=finite_number(data.get("duration_s")),
        )
    except ValidationError as exc:
        raise MalformedResponseError(
            "the task-info answer could not be read: " + describe_validation_error(exc),
            flux_task_id=flux_task_id,
        ) from None
    # A result that was a JSON string was decoded after the envelope was scrubbed.
    if len(secret) >= MIN_SCRUBBED_KEY_CHARS and secret in info.model_dump_json():
        raise MalformedResponseError(
            "the task-info answer repeats the API key: refusing it",
            flux_task_id=flux_task_id,
            retryable=False,
        )
    return info


def task_info_from_callback(payload: Any, *, secret: str = "") -> TaskInfo:
    """The task a callback POST describes: the bare ``data`` object or the whole envelope."""
    if isinstance(payload, (bytes, str)):
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError):
            raise MalformedResponseError("the callback's body is not JSON") from None
    if (
        isinstance(payload, dict)
        and isinstance(payload.get("data"), dict)
        and ("code" in payload or _first(payload, "task_id") is None)
    ):
        payload = payload["data"]
    return task_info_of(scrub(payload, secret) if secret else payload, secret=secret)


def _number_under(envelope: Envelope, keys: tuple[str, ...], what: str, *, signed: bool) -> float:
    data = envelope.data
    candidates = [data] if not isinstance(data, dict) else [data.get(key) for key in keys]
    for candidate in candidates:
        number = finite_number(candidate, signed=signed)
        if number is not None:
            return number
    sign = "" if signed else " (it must be >= 0)"
    raise MalformedResponseError(f"the {what} answer has no number under data.{keys[0]}{sign}")


def balance_of(envelope: Envelope) -> float:
    """The account's credits from a balance answer (``data.balance``; may be negative)."""
    return _number_under(envelope, ("balance", "credits"), "balance", signed=True)


def estimate_of(envelope: Envelope) -> float:
    """The credits a task would cost from an ``estimate-credits`` answer (``data.credits``)."""
    return _number_under(
        envelope, ("credits", "estimated_credits", "cost"), "estimate-credits", signed=False
    )
