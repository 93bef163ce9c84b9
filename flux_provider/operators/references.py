"""Reference images from storage: ``s3://…``, ``gs://…``, ``file://…``, a local path or an
``ObjectStoragePath`` in ``input_urls``, read and sent as base64 ``data:`` URIs.

Edit pipelines keep their photos in buckets; the service takes only http(s) URLs and ``data:``
URIs. Each stored reference is read through Airflow's object storage (with the connection it
finds for the path), checked to be an image under the size cap, and encoded, all before
anything is submitted: a missing, oversized or non-image file fails the task without charge,
naming the item. http(s) URLs and ``data:`` URIs pass through as they are.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

from airflow.sdk import ObjectStoragePath

from flux_provider.api.errors import InvalidInputError
from flux_provider.api.formatting import bytes_text
from flux_provider.api.images import SIGNATURE_BYTES, image_type
from flux_provider.hooks.storage import storage_path

MAX_REFERENCE_BYTES = 16 << 20
"""The largest reference image read from storage (a 2K PNG is under 16 MiB)."""

_PASSED_THROUGH = ("http://", "https://", "data:")
_OTHER_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:(?!//)")
"""A URI with a scheme but no authority (``javascript:``, ``mailto:``): never a location."""


def is_stored_reference(value: object) -> bool:
    """Whether an ``input_urls`` item names stored bytes rather than a URL the API fetches."""
    if isinstance(value, ObjectStoragePath):
        return True
    return isinstance(value, str) and not value.strip().lower().startswith(_PASSED_THROUGH)


def _shown(target: object, limit: int = 120) -> str:
    """A location for an error: its end is what tells files apart, so a long one keeps it."""
    text = str(target)
    return repr(text if len(text) <= limit else "..." + text[-(limit - 3) :])


def _read(path: ObjectStoragePath, where: str, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as source:  # type: ignore[no-untyped-call]
            data: bytes = source.read(max_bytes + 1)
    except FileNotFoundError:
        raise InvalidInputError(f"{where}: {_shown(path)} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{where}: {_shown(path)} cannot be read: {exc}") from None
    if len(data) > max_bytes:
        raise InvalidInputError(
            f"{where}: {_shown(path)} is over the {bytes_text(max_bytes)} cap for a reference image"
        )
    return data


def data_uri(target: str | ObjectStoragePath, where: str, max_bytes: int) -> str:
    """The image at ``target`` as a ``data:image/…;base64,`` URI (raises
    :class:`InvalidInputError` naming ``where`` if it cannot be)."""
    if isinstance(target, str) and _OTHER_SCHEME.match(target.strip()):
        raise InvalidInputError(
            f"{where}: {_shown(target)} is not an http(s) URL, a data: URI or a storage "
            "location (s3://…, gs://…, file://…, a path)"
        )
    try:
        path = storage_path(target)
    except (InvalidInputError, ValueError) as exc:
        raise InvalidInputError(f"{where}: {_shown(target)} is not a location: {exc}") from None
    data = _read(path, where, max_bytes)
    kind = image_type(data[:SIGNATURE_BYTES])
    if kind is None:
        raise InvalidInputError(f"{where}: {_shown(target)} is not a PNG, JPEG, WebP or GIF image")
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def resolve_references(
    references: Sequence[Any] | None,
    *,
    field: str = "input_urls",
    max_bytes: int = MAX_REFERENCE_BYTES,
) -> list[Any] | None:
    """``references`` with every stored one replaced by its ``data:`` URI (others as given)."""
    if references is None or isinstance(references, (str, bytes)):
        return references  # type: ignore[return-value]  # the model names the wrong type
    return [
        data_uri(item, f"{field}[{index}]", max_bytes) if is_stored_reference(item) else item
        for index, item in enumerate(references)
    ]
