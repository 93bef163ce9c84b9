"""What a generation delivered, typed: :class:`GenerationResult` (no Airflow imports).

The operator builds one when its task ends and returns :meth:`GenerationResult.to_xcom`, the
JSON its users read from XCom (the documented ``return_value``: the task's final info, ``input``
and, with ``download_to``, ``stored``). Lineage, the images plugin and the demo read a result
back through :meth:`GenerationResult.from_xcom` instead of picking keys out of a dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flux_provider.api.downloads import StoredImage
from flux_provider.api.models import TaskInfo

_TEXT_FIELDS = ("location", "sha256", "content_type", "source_url")
"""A stored image's fields besides its size (``bytes``), all text."""


class MalformedResultError(ValueError):
    """A value that is not a generation's result (an XCom written by something else)."""


def stored_image_from(value: object) -> StoredImage:
    """A stored copy as recorded in XCom; raises :class:`MalformedResultError` if it is not."""
    if not isinstance(value, Mapping):
        raise MalformedResultError(f"a stored image is a mapping, not {type(value).__name__}")
    size = value.get("bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise MalformedResultError(f"a stored image's size is a byte count, got {size!r}")
    texts = {name: value.get(name) for name in _TEXT_FIELDS}
    for name, text in texts.items():
        if not isinstance(text, str):
            raise MalformedResultError(f"a stored image's {name} is text, got {text!r}")
    return StoredImage(
        location=str(texts["location"]),
        bytes=size,
        sha256=str(texts["sha256"]),
        content_type=str(texts["content_type"]),
        source_url=str(texts["source_url"]),
    )


@dataclass(frozen=True)
class GenerationResult:
    """One generation as delivered: the final task, what was asked, and the stored copies.

    :ivar task: the task's final info (``success``: a failed task raises instead).
    :ivar request: what was asked for, as :meth:`~flux_provider.api.models.Flux2MaxInput.summary`
        gives it (``None`` when the result comes from a sensor, which asked nothing).
    :ivar stored: the copies in ``download_to``, in the order of the result URLs (``None``
        without ``download_to``).
    :ivar reused: the images of an earlier identical generation, returned without calling the
        API (``reuse=True``).
    """

    task: TaskInfo
    request: Mapping[str, Any] | None = None
    stored: Sequence[StoredImage] | None = None
    reused: bool = False

    @property
    def flux_task_id(self) -> str:
        """The API's task id."""
        return self.task.flux_task_id

    @property
    def result_urls(self) -> list[str]:
        """The API's URLs of the images (they expire)."""
        return list(self.task.result_urls)

    @property
    def locations(self) -> list[str]:
        """Where the stored copies are (empty without ``download_to``)."""
        return [image.location for image in self.stored or ()]

    def to_xcom(self) -> dict[str, Any]:
        """The JSON-serialisable ``return_value``: the task's summary, then ``input`` and
        ``stored`` when known, and ``reused: true`` for a reused result (the documented XCom
        contract)."""
        value = self.task.summary()
        if self.request is not None:
            value["input"] = dict(self.request)
        if self.stored is not None:
            value["stored"] = [image.as_dict() for image in self.stored]
        if self.reused:
            value["reused"] = True
        return value

    @classmethod
    def from_xcom(cls, value: object) -> GenerationResult:
        """Read a ``return_value`` back; raises :class:`MalformedResultError` if it is not one
        (XComs can be written by anything, a user with edit rights included)."""
        if not isinstance(value, Mapping):
            raise MalformedResultError(f"a result is a mapping, not {type(value).__name__}")
        try:
            task = TaskInfo.model_validate(dict(value))
        except ValidationError as exc:
            raise MalformedResultError(f"not a FLUX task's result: {exc}") from None
        request = value.get("input")
        if request is not None and not isinstance(request, Mapping):
            raise MalformedResultError("a result's input is a mapping")
        stored = value.get("stored")
        if stored is not None and not isinstance(stored, list):
            raise MalformedResultError("a result's stored copies are a list")
        return cls(
            task=task,
            request=request,
            stored=None if stored is None else tuple(stored_image_from(item) for item in stored),
            reused=value.get("reused") is True,
        )
