"""The task API's wire format as the fake serves it: paths, envelopes, request validation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CREATE_PATH",
    "MODEL",
    "POLL_PATH",
    "CreateRequest",
    "InvalidRequestError",
    "Reply",
    "envelope",
    "error_reply",
    "ok_reply",
    "parse_create_body",
    "validated_input",
]

MODEL = "flux-2-max"
"""The only model ``createTask`` accepts."""

CREATE_PATH = "/api/v1/jobs/createTask"
"""Path of the create endpoint (POST)."""

POLL_PATH = "/api/v1/jobs/recordInfo"
"""Path of the poll endpoint (GET, ``?taskId=``)."""


class InvalidRequestError(ValueError):
    """A create request the real API would answer with HTTP 422."""


@dataclass(frozen=True)
class CreateRequest:
    """A validated ``createTask`` body."""

    model: str
    input: dict[str, object]
    callback_url: str | None
    body: dict[str, object]


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body and the headers beyond Content-Type/Content-Length."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def envelope(code: int, msg: str, data: object) -> bytes:
    """Serialize the API's ``{"code", "msg", "data"}`` answer envelope."""
    return json.dumps({"code": code, "msg": msg, "data": data}).encode()


def ok_reply(data: object) -> Reply:
    """HTTP 200 with ``{"code": 200, "msg": "success", "data": data}``."""
    return Reply(status=200, body=envelope(200, "success", data))


def error_reply(
    status: int,
    msg: str,
    *,
    code: int | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    close: bool = False,
) -> Reply:
    """An error envelope with ``data: null``; the body ``code`` defaults to ``status``."""
    body = envelope(status if code is None else code, msg, None)
    return Reply(status=status, body=body, headers=headers, close=close)


def validated_input(value: object) -> dict[str, object]:
    """Return a JSON copy of a request ``input`` object after checking its prompt.

    Raises:
        InvalidRequestError: If ``value`` is not an object or has no non-empty string ``prompt``.
    """
    if not isinstance(value, Mapping):
        raise InvalidRequestError("'input' must be a JSON object")
    prompt = value.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequestError("'input.prompt' is required and must be a non-empty string")
    try:
        copied: dict[str, object] = json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"'input' is not JSON-serializable: {exc}") from exc
    return copied


def parse_create_body(raw: bytes) -> CreateRequest:
    """Parse and validate a ``createTask`` request body.

    Raises:
        InvalidRequestError: With a message naming the problem.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidRequestError("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    model = body.get("model")
    if model != MODEL:
        raise InvalidRequestError(f"unsupported model {model!r}; expected {MODEL!r}")
    callback_url = body.get("callBackUrl")
    if callback_url is not None and not isinstance(callback_url, str):
        raise InvalidRequestError("'callBackUrl' must be a string")
    return CreateRequest(
        model=model,
        input=validated_input(body.get("input")),
        callback_url=callback_url or None,
        body=body,
    )
