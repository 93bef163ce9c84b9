"""The ways an ended task's outcome can look on the wire, as configured on the fake.

The documented shapes are the defaults; the others reproduce what API.md's tolerance rules
say a client must also read, so a client's tests can cover each of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

__all__ = [
    "FAILURE_SHAPES",
    "FAKE_TASK_STATUSES",
    "RESULT_SHAPES",
    "FailureShape",
    "FakeTaskStatus",
    "ResultShape",
    "WireStyle",
]

FakeTaskStatus = Literal["pending", "running", "success", "failed"]
"""A task's canonical status (``failed`` replaces ``success`` for failing tasks)."""

FAKE_TASK_STATUSES: tuple[FakeTaskStatus, ...] = get_args(FakeTaskStatus)
"""Every canonical status, in the order a task walks through them."""

ResultShape = Literal[
    "media_urls",
    "json_string",
    "result.images",
    "result.image_urls",
    "result.urls",
    "result.result_urls",
    "result.resultUrls",
    "result.output",
    "result.outputs",
    "result.image",
    "result.url",
    "url",
    "url_list",
    "url_objects",
    "data",
    "empty",
]
"""Where a successful task puts its image URL (see :data:`RESULT_SHAPES`)."""

RESULT_SHAPES: tuple[ResultShape, ...] = get_args(ResultShape)
"""Allowed ``result_shape`` values. With ``URL`` the result file's address:

* ``media_urls`` (default, documented): ``result = {"code": 200, "message": "success",
  "media_urls": [URL]}``.
* ``json_string``: ``result`` is that same object encoded as a JSON *string*.
* ``result.<key>``: ``result = {"code": 200, "message": "success", "<key>": ...}``, a list
  ``[URL]`` for ``images``, ``image_urls``, ``urls``, ``result_urls``, ``resultUrls``,
  ``output`` and ``outputs``, the string ``URL`` for ``image`` and ``url``.
* ``url``: ``result = URL``, a bare string.
* ``url_list``: ``result = [URL]``.
* ``url_objects``: ``result = [{"url": URL}]``.
* ``data``: ``result = null`` and ``data.image_urls = [URL]``.
* ``empty``: ``result = {"code": 200, "message": "success"}``: success without any URL.
"""

FailureShape = Literal["result", "error_message", "fail_msg", "error_string", "error_object"]
"""Where a failed task puts its reason (see :data:`FAILURE_SHAPES`)."""

FAILURE_SHAPES: tuple[FailureShape, ...] = get_args(FailureShape)
"""Allowed ``failure_shape`` values, with ``CODE``/``MESSAGE`` the failure's code and reason:

* ``result`` (default): ``result = {"code": CODE, "message": MESSAGE}``.
* ``error_message``: ``result = null``, ``data.error_message``, ``data.error_code``.
* ``fail_msg``: ``result = null``, ``data.fail_msg``, ``data.fail_code``.
* ``error_string``: ``result = null``, ``data.error = MESSAGE`` (no code).
* ``error_object``: ``result = null``, ``data.error = {"message": MESSAGE, "code": CODE}``.
"""

_STRING_KEYS = frozenset({"image", "url"})


def _success_result(url: str) -> dict[str, object]:
    return {"code": 200, "message": "success", "media_urls": [url]}


@dataclass(frozen=True)
class WireStyle:
    """How task outcomes are written: status words, result shape and failure shape."""

    status_words: Mapping[FakeTaskStatus, str] = field(default_factory=dict)
    result_shape: ResultShape = "media_urls"
    failure_shape: FailureShape = "result"

    def __post_init__(self) -> None:
        """Reject unknown statuses, blank words and unknown shapes."""
        for status, word in self.status_words.items():
            if status not in FAKE_TASK_STATUSES:
                raise ValueError(
                    f"status_words key {status!r} is not one of {', '.join(FAKE_TASK_STATUSES)}"
                )
            if not isinstance(word, str) or not word.strip():
                raise ValueError(f"status_words[{status!r}] must be a non-empty string")
        if self.result_shape not in RESULT_SHAPES:
            raise ValueError(
                f"unknown result_shape {self.result_shape!r}; "
                f"choose from {', '.join(RESULT_SHAPES)}"
            )
        if self.failure_shape not in FAILURE_SHAPES:
            raise ValueError(
                f"unknown failure_shape {self.failure_shape!r}; "
                f"choose from {', '.join(FAILURE_SHAPES)}"
            )
        object.__setattr__(self, "status_words", MappingProxyType(dict(self.status_words)))

    def word(self, status: FakeTaskStatus) -> str:
        """The word sent in ``data.status`` for ``status``."""
        return self.status_words.get(status, status)

    def success_fields(self, url: str) -> dict[str, object]:
        """The ``data`` fields that carry a successful task's image URL."""
        shape = self.result_shape
        result: object
        if shape == "media_urls":
            result = _success_result(url)
        elif shape == "json_string":
            result = json.dumps(_success_result(url))
        elif shape.startswith("result."):
            key = shape.removeprefix("result.")
            value: object = url if key in _STRING_KEYS else [url]
            result = {"code": 200, "message": "success", key: value}
        elif shape == "url":
            result = url
        elif shape == "url_list":
            result = [url]
        elif shape == "url_objects":
            result = [{"url": url}]
        elif shape == "data":
            return {"result": None, "image_urls": [url]}
        else:  # "empty"
            result = {"code": 200, "message": "success"}
        return {"result": result}

    def failure_fields(self, code: int, message: str) -> dict[str, object]:
        """The ``data`` fields that carry a failed task's code and reason."""
        shape = self.failure_shape
        if shape == "result":
            return {"result": {"code": code, "message": message}}
        if shape == "error_message":
            return {"result": None, "error_message": message, "error_code": code}
        if shape == "fail_msg":
            return {"result": None, "fail_msg": message, "fail_code": code}
        if shape == "error_string":
            return {"result": None, "error": message}
        return {"result": None, "error": {"message": message, "code": code}}
