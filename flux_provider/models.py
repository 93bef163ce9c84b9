"""Pydantic models of the FLUX task API's wire format.

Parse once at the edge, pass typed objects inward: the client turns every
answer into one of these, and the operator validates user input with
:class:`Flux2MaxInput` before any HTTP call.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from flux_provider.errors import GenerationFailedError, InvalidInputError, generation_failure

MODEL_NAME: Final = "flux-2-max"
"""The only model this provider submits."""

MAX_INPUT_URLS = 8
MAX_PROMPT_CHARS = 131_072
"""The API takes up to 32K tokens; this bounds the characters generously (~4 per token)."""

MAX_SEED = 2**32 - 1

FLUX_TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
"""Task ids are used in query strings and file names: letters, digits and ``_ . : -`` only."""

AspectRatio = Literal[
    "1:1",
    "4:3",
    "3:4",
    "16:9",
    "9:16",
    "3:2",
    "2:3",
    "21:9",
    "9:21",
    "5:4",
    "4:5",
    "auto",
    "match_input_image",
]
Resolution = Literal["1K", "2K"]
OutputFormat = Literal["png", "jpeg", "jpg", "webp"]


def check_http_url(value: str, field: str) -> str:
    """Return ``value`` if it is an absolute http(s) URL with a host, else raise ``ValueError``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an absolute http(s) URL, got {value!r}")
    return value


class Flux2MaxInput(BaseModel):
    """The ``input`` object of a ``flux-2-max`` task.

    Known fields are validated; unknown fields pass through untouched (hosts
    add parameters over time) but must be JSON-serialisable.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    input_urls: list[StrictStr] | None = Field(default=None, max_length=MAX_INPUT_URLS)
    aspect_ratio: AspectRatio | None = None
    resolution: Resolution | None = None
    seed: StrictInt | None = Field(default=None, ge=0, le=MAX_SEED)
    safety_tolerance: StrictInt | None = Field(default=None, ge=0, le=5)
    output_format: OutputFormat | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @field_validator("input_urls")
    @classmethod
    def _urls_are_http(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for index, url in enumerate(value):
                check_http_url(url, f"input_urls[{index}]")
        return value

    @model_validator(mode="after")
    def _extras_are_json(self) -> Flux2MaxInput:
        for key, extra in (self.model_extra or {}).items():
            try:
                json.dumps(extra, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"extra field {key!r} is not JSON-serialisable: {exc}") from None
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent as ``input`` (unset fields omitted, extras kept)."""
        return self.model_dump(exclude_none=True)


def describe_validation_error(exc: ValidationError, *, prefix: str = "") -> str:
    """One line per problem, each naming the field, what is allowed and what was given."""
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "(input)"
        given = error.get("input")
        given_text = repr(given)
        if len(given_text) > 80:
            given_text = given_text[:77] + "..."
        msg = error["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}{loc}: {msg} (got {given_text})")
    return "; ".join(lines)


def validate_input(data: Any) -> Flux2MaxInput:
    """Validate user input, raising :class:`InvalidInputError` that names each bad field."""
    if isinstance(data, Flux2MaxInput):
        return data
    if not isinstance(data, dict):
        raise InvalidInputError(f"input must be a mapping of parameters, got {type(data).__name__}")
    try:
        return Flux2MaxInput.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(
            "invalid FLUX.2 [max] input: " + describe_validation_error(exc)
        ) from None


class CreateTaskRequest(BaseModel):
    """The body of ``POST createTask``."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    model: Literal["flux-2-max"] = MODEL_NAME
    callback_url: str | None = Field(default=None, alias="callBackUrl")
    input: dict[str, Any]

    @field_validator("callback_url")
    @classmethod
    def _callback_is_http(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "callback_url")

    def to_wire(self) -> dict[str, Any]:
        """The JSON body (camelCase keys, unset fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True)


def _check_task_id(value: str) -> str:
    if not FLUX_TASK_ID_PATTERN.match(value):
        raise ValueError(f"task id {value[:60]!r} has characters outside [A-Za-z0-9_.:-]")
    return value


class CreateTaskData(BaseModel):
    """The ``data`` of the createTask answer."""

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(alias="taskId")

    @field_validator("task_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return _check_task_id(value)


class TaskState(str, Enum):
    """The task's lifecycle: waiting → queuing → generating → success | fail."""

    WAITING = "waiting"
    QUEUING = "queuing"
    GENERATING = "generating"
    SUCCESS = "success"
    FAIL = "fail"
    UNKNOWN = "unknown"
    """A state this version does not know yet; treated as still running."""

    @property
    def is_terminal(self) -> bool:
        """Whether the task has ended (``success`` or ``fail``)."""
        return self in (TaskState.SUCCESS, TaskState.FAIL)

    @classmethod
    def parse(cls, value: object) -> TaskState:
        """Map a wire value to a state; unknown values become ``UNKNOWN`` instead of failing."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            return cls.UNKNOWN


def _decode_json_string(value: Any, field: str) -> Any:
    """``param`` and ``resultJson`` are JSON encoded as strings; empty means absent."""
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a JSON string, got {type(value).__name__}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{field} is not valid JSON: {exc.msg} at position {exc.pos}") from None


def _ms_to_datetime(value: int | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(value / 1000, tz=timezone.utc)


class TaskInfo(BaseModel):
    """The ``data`` of the recordInfo answer: one task's state and result."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    flux_task_id: str = Field(alias="taskId")
    model: str | None = None
    state: TaskState
    raw_state: str = ""
    param: dict[str, Any] | None = None
    result: dict[str, Any] | None = Field(default=None, alias="resultJson")
    fail_code: str | None = Field(default=None, alias="failCode")
    fail_msg: str | None = Field(default=None, alias="failMsg")
    cost_time: float | None = Field(default=None, alias="costTime")
    complete_time: int | None = Field(default=None, alias="completeTime")
    create_time: int | None = Field(default=None, alias="createTime")
    update_time: int | None = Field(default=None, alias="updateTime")

    @model_validator(mode="before")
    @classmethod
    def _keep_raw_state(cls, data: Any) -> Any:
        if isinstance(data, dict) and "raw_state" not in data:
            data = {**data, "raw_state": str(data.get("state", ""))}
        return data

    @field_validator("flux_task_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return _check_task_id(value)

    @field_validator("state", mode="before")
    @classmethod
    def _parse_state(cls, value: Any) -> TaskState:
        return TaskState.parse(value)

    @field_validator("param", mode="before")
    @classmethod
    def _parse_param(cls, value: Any) -> Any:
        decoded = _decode_json_string(value, "param")
        return decoded if isinstance(decoded, dict) else None

    @field_validator("result", mode="before")
    @classmethod
    def _parse_result(cls, value: Any) -> Any:
        decoded = _decode_json_string(value, "resultJson")
        if decoded is not None and not isinstance(decoded, dict):
            raise ValueError("resultJson must encode a JSON object")
        return decoded

    @field_validator("fail_code", "fail_msg", mode="before")
    @classmethod
    def _text_or_none(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        return str(value)

    @property
    def result_urls(self) -> list[str]:
        """The result image URLs (empty until the task succeeds)."""
        urls = (self.result or {}).get("resultUrls") or []
        return [url for url in urls if isinstance(url, str)]

    @property
    def created_at(self) -> datetime | None:
        """When the task was created (UTC)."""
        return _ms_to_datetime(self.create_time)

    @property
    def completed_at(self) -> datetime | None:
        """When the task ended (UTC), if it has."""
        return _ms_to_datetime(self.complete_time)

    def failure(self) -> GenerationFailedError | None:
        """The classified error of a failed task, or ``None`` if it did not fail."""
        if self.state is not TaskState.FAIL:
            return None
        return generation_failure(self.fail_code, self.fail_msg, flux_task_id=self.flux_task_id)

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable digest (what the operator returns and triggers emit)."""
        return {
            "flux_task_id": self.flux_task_id,
            "state": self.state.value,
            "raw_state": self.raw_state,
            "result_urls": self.result_urls,
            "fail_code": self.fail_code,
            "fail_msg": self.fail_msg,
            "cost_time": self.cost_time,
            "create_time": self.create_time,
            "complete_time": self.complete_time,
            "update_time": self.update_time,
        }


class ApiEnvelope(BaseModel):
    """Every answer's outer object: ``code``, ``msg`` (or ``message``) and ``data``."""

    model_config = ConfigDict(extra="ignore")

    code: int
    msg: str | None = None
    message: str | None = None
    data: Any = None

    @property
    def text(self) -> str:
        """The server's message, whichever key carried it."""
        return self.msg or self.message or ""
