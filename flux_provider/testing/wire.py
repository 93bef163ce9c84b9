"""The task API's wire format as the fake serves it: paths, envelopes, request validation."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "BALANCE_PATH",
    "CREATE_PATH",
    "ESTIMATE_PATH",
    "INFO_PATH",
    "MESSAGE_KEYS",
    "MODEL",
    "CreateRequest",
    "Endpoint",
    "MessageKey",
    "RejectedRequestError",
    "Reply",
    "envelope",
    "error_reply",
    "format_seconds",
    "ok_reply",
    "parse_create_body",
    "route",
    "validated_input",
]

MODEL = "flux-2-max"
"""The only model ``CreateTask`` accepts."""

CREATE_PATH = "/api/v1/client/job/CreateTask"
"""Path of the create endpoint (POST)."""

INFO_PATH = "/api/v1/client/job/TaskInfo"
"""Path of the task-info endpoint (GET, ``?task_id=``)."""

BALANCE_PATH = "/api/v1/client/account/balance"
"""Path of the account balance endpoint (GET)."""

ESTIMATE_PATH = "/api/v1/client/job/estimate-credits"
"""Path of the credit estimate endpoint (POST, same body as ``CreateTask``)."""

Endpoint = Literal["create", "poll", "balance", "estimate", "image"]
"""The routes of the fake API (``poll`` is ``TaskInfo``; ``image`` serves result files)."""

MessageKey = Literal["message", "msg"]
"""Name of the envelope's text field."""

MESSAGE_KEYS: tuple[MessageKey, ...] = ("message", "msg")
"""Allowed values of ``message_key``: the documented ``message``, or ``msg``."""

_IMAGE_PATH = re.compile(r"^/files/(?P<task_id>[^/]+)/(?P<index>\d+)\.(?P<ext>[A-Za-z0-9]+)$")
_ROUTES: dict[tuple[str, str], Endpoint] = {
    ("POST", CREATE_PATH): "create",
    ("GET", INFO_PATH): "poll",
    ("GET", BALANCE_PATH): "balance",
    ("POST", ESTIMATE_PATH): "estimate",
}
_DATA_IMAGE_URI = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


class RejectedRequestError(ValueError):
    """A request body the real API would answer with HTTP 422."""


@dataclass(frozen=True)
class CreateRequest:
    """A validated ``CreateTask`` (or ``estimate-credits``) body."""

    model: str
    input: dict[str, object]
    callback_url: str | None


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body and the headers beyond Content-Type/Content-Length."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def route(method: str, path: str) -> tuple[Endpoint | None, re.Match[str] | None]:
    """The endpoint a request targets (``None``: unknown route) and, for files, the path match."""
    endpoint = _ROUTES.get((method, path))
    if endpoint is not None:
        return endpoint, None
    if method == "GET":
        match = _IMAGE_PATH.match(path)
        if match is not None:
            return "image", match
    return None, None


def envelope(
    code: int, message: str, data: object, *, message_key: MessageKey = "message"
) -> bytes:
    """Serialize the API's ``{"code", "message", "data"}`` answer envelope."""
    return json.dumps({"code": code, message_key: message, "data": data}).encode()


def ok_reply(data: object, *, message_key: MessageKey = "message") -> Reply:
    """HTTP 200 with ``{"code": 200, "message": "success", "data": data}``."""
    return Reply(status=200, body=envelope(200, "success", data, message_key=message_key))


def error_reply(
    status: int,
    message: str,
    *,
    code: int | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    close: bool = False,
    message_key: MessageKey = "message",
) -> Reply:
    """An error envelope with ``data: null``; the body ``code`` defaults to ``status``."""
    body = envelope(status if code is None else code, message, None, message_key=message_key)
    return Reply(status=status, body=body, headers=headers, close=close)


def format_seconds(seconds: float) -> str:
    """Seconds as a ``Retry-After`` header sends them: whole values as integers."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _is_image_reference(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if _DATA_IMAGE_URI.match(value):
        return True
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def validated_input(value: object) -> dict[str, object]:
    """Return a JSON copy of a request ``input`` object after checking its fields.

    Raises:
        RejectedRequestError: If ``value`` is not an object, has no non-blank string ``prompt``, or
            has an ``img_urls`` that is not a list of http(s) URLs / ``data:image/`` URIs.
    """
    if not isinstance(value, Mapping):
        raise RejectedRequestError("'input' must be a JSON object")
    prompt = value.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RejectedRequestError("'input.prompt' is required and must be a non-empty string")
    if "img_urls" in value:
        img_urls = value["img_urls"]
        if not isinstance(img_urls, list) or not all(map(_is_image_reference, img_urls)):
            raise RejectedRequestError(
                "'input.img_urls' must be a list of http(s) URLs or data:image/...;base64, URIs"
            )
    try:
        copied: dict[str, object] = json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as exc:
        raise RejectedRequestError(f"'input' is not JSON-serializable: {exc}") from exc
    return copied


def parse_create_body(raw: bytes) -> CreateRequest:
    """Parse and validate a ``CreateTask`` (or ``estimate-credits``) request body.

    Raises:
        RejectedRequestError: With a message naming the problem.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise RejectedRequestError("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RejectedRequestError("request body must be a JSON object")
    model = body.get("model")
    if model != MODEL:
        raise RejectedRequestError(f"unsupported model {model!r}; expected {MODEL!r}")
    callback_url = body.get("callback_url")
    if callback_url is not None and not isinstance(callback_url, str):
        raise RejectedRequestError("'callback_url' must be a string")
    return CreateRequest(
        model=model, input=validated_input(body.get("input")), callback_url=callback_url or None
    )
