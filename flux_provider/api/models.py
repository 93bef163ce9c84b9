"""Typed models of what the provider sends and learns: the task's input, state and result.

Parse once at the edge, pass typed objects inward: :mod:`flux_provider.api.wire`
turns every answer of the API into one of these and writes every request
(no field name of the wire appears here, except that users may call the
reference images by Crun's name ``img_urls``), and the operator validates user
input with :class:`Flux2MaxInput` before any HTTP call.
"""

from __future__ import annotations

import json
import re
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

from flux_provider.api.errors import FluxError, InvalidInputError, NoResultError, generation_failure

MODEL_NAME: Final = "flux-2-max"
"""The only model this provider submits."""

MAX_INPUT_URLS = 8
MAX_PROMPT_CHARS = 131_072
"""The API takes up to 32K tokens; this bounds the characters generously (~4 per token)."""

MAX_SEED = 2**32 - 1

FLUX_TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
"""Task ids are used in query strings and file names: letters, digits and ``_ . : -`` only."""

ASPECT_RATIO_WORDS: Final = ("auto", "match_input_image")
"""Aspect ratios that are not ``W:H``; the service answers 422 for a ratio it does not offer."""
_ASPECT_RATIO = re.compile(r"^[1-9][0-9]{0,2}:[1-9][0-9]{0,2}$")
Resolution = Literal["1K", "2K"]
OutputFormat = Literal["png", "jpeg", "jpg", "webp"]


_DATA_IMAGE_URI = re.compile(
    r"^data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]+$", re.IGNORECASE
)
_QUOTED_CHARS = 80


def quoted(value: object) -> str:
    """``repr(value)`` cut to a length a log line can carry (a data URI may be megabytes)."""
    text = repr(value)
    return text if len(text) <= _QUOTED_CHARS else text[: _QUOTED_CHARS - 3] + "..."


def check_http_url(value: str, field: str) -> str:
    """Return ``value`` if it is an absolute http(s) URL with a host, else raise ``ValueError``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an absolute http(s) URL, got {quoted(value)}")
    return value


def check_image_reference(value: str, field: str) -> str:
    """Return ``value`` if it is an http(s) URL or a ``data:image/...;base64,`` URI."""
    expected = f"{field} must be an absolute http(s) URL or a data:image/...;base64, URI"
    if value[:5].lower() == "data:":
        if not _DATA_IMAGE_URI.match(value):
            raise ValueError(f"{expected}, got a malformed data URI {quoted(value)}")
        return value
    try:
        return check_http_url(value, field)
    except ValueError:
        raise ValueError(f"{expected}, got {quoted(value)}") from None


class Flux2MaxInput(BaseModel):
    """The ``input`` object of a ``flux-2-max`` task.

    Known fields are validated; unknown fields pass through untouched (hosts
    add parameters over time) but must be JSON-serialisable.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    input_urls: list[StrictStr] | None = Field(default=None, max_length=MAX_INPUT_URLS)
    aspect_ratio: StrictStr | None = None
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

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect_ratio_shape(cls, value: str | None) -> str | None:
        # API.md lists the common ratios followed by "...": the shape is checked here, the
        # ratio itself by the service.
        if value is not None and value not in ASPECT_RATIO_WORDS and not _ASPECT_RATIO.match(value):
            raise ValueError(
                "aspect_ratio must be W:H such as '1:1', '16:9' or '9:21', 'auto' or "
                f"'match_input_image', got {quoted(value)}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_reference_images(cls, data: Any) -> Any:
        # Crun's own name for the field is accepted from users who read its documentation.
        if isinstance(data, dict) and "img_urls" in data:
            if data.get("input_urls") is not None:
                raise ValueError("give the reference images once, as input_urls (not img_urls)")
            rest = {k: v for k, v in data.items() if k != "img_urls"}
            return {**rest, "input_urls": data["img_urls"]}
        return data

    @field_validator("input_urls")
    @classmethod
    def _urls_are_images(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for index, url in enumerate(value):
                check_image_reference(url, f"input_urls[{index}]")
        return value

    @model_validator(mode="after")
    def _extras_are_json(self) -> Flux2MaxInput:
        for key, extra in (self.model_extra or {}).items():
            try:
                json.dumps(extra, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"extra field {key!r} is not JSON-serialisable: {exc}") from None
        return self

    def parameters(self) -> dict[str, Any]:
        """The set parameters under the provider's names (unset fields omitted, extras kept)."""
        return self.model_dump(exclude_none=True)

    def summary(self) -> dict[str, Any]:
        """What was asked for, small enough for XCom: the parameters, with the reference
        images (which may be whole ``data:`` URIs) replaced by their number."""
        described = self.parameters()
        references = described.pop("input_urls", None)
        if references is not None:
            described["reference_images"] = len(references)
        return described


def describe_validation_error(exc: ValidationError, *, prefix: str = "") -> str:
    """One line per problem, each naming the field, what is allowed and what was given."""
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "(input)"
        msg = error["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}{loc}: {msg} (got {quoted(error.get('input'))})")
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


def check_model(model: str) -> str:
    """Return ``model`` if this provider submits it (only :data:`MODEL_NAME`), else raise
    :class:`InvalidInputError` (a ``ValueError``: a DAG that names another fails to parse)."""
    if model != MODEL_NAME:
        raise InvalidInputError(f"model must be {MODEL_NAME!r}, got {model!r}")
    return model


def check_task_id(value: str) -> str:
    """Return ``value`` if it is a usable task id, else raise ``ValueError``."""
    if not FLUX_TASK_ID_PATTERN.match(value):
        raise ValueError(f"task id {quoted(value)} has characters outside [A-Za-z0-9_.:-]")
    return value


class TaskState(str, Enum):
    """Where a task is: ``pending`` → ``running`` → ``success`` | ``failed``.

    The API's many words for these (``queued``, ``processing``, ``succeeded``,
    ``error``…) are mapped by :mod:`flux_provider.api.wire`; a word it does not know
    becomes ``UNKNOWN``, which counts as not ended.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UNKNOWN = "unknown"
    """A status word this version does not know; treated as still running."""

    @property
    def is_terminal(self) -> bool:
        """Whether the task has ended (``success`` or ``failed``)."""
        return self in (TaskState.SUCCESS, TaskState.FAILED)


class TaskInfo(BaseModel):
    """One task's state and result, under the provider's names.

    :meth:`summary` is what the operator returns and the trigger's event
    carries; ``TaskInfo.model_validate(summary)`` reads it back.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    flux_task_id: str
    state: TaskState
    raw_state: str = ""
    """The status word exactly as the API sent it."""
    result_urls: list[str] = Field(default_factory=list)
    fail_code: str | None = None
    fail_msg: str | None = None
    credits: float | None = None
    """What the task cost, when the API says."""
    created_at: float | None = None
    """Epoch seconds."""
    completed_at: float | None = None
    """Epoch seconds, once the task has ended."""
    duration_s: float | None = None
    """Seconds the API says the task took."""

    @field_validator("flux_task_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return check_task_id(value)

    def failure(self) -> FluxError | None:
        """Why a task that ended gives no images, or ``None``.

        A failed task is classified by :func:`~flux_provider.api.errors.generation_failure`;
        a success without any image URL is a retryable :class:`NoResultError`.
        """
        if self.state is TaskState.FAILED:
            return generation_failure(self.fail_code, self.fail_msg, flux_task_id=self.flux_task_id)
        if self.state is TaskState.SUCCESS and not self.result_urls:
            return NoResultError(
                f"flux task {self.flux_task_id} succeeded but its answer holds no image URL",
                flux_task_id=self.flux_task_id,
            )
        return None

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable digest (what the operator returns and triggers emit)."""
        return self.model_dump(mode="json")
