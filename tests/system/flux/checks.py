"""The check the FLUX system tests end with: the generation stored an image."""

from __future__ import annotations

import hashlib
from typing import Any

from airflow.sdk import ObjectStoragePath, task

from flux_provider.api.images import SIGNATURE_BYTES, image_type

__all__ = ["check_stored_batch", "check_stored_image"]


def _checked(result: dict[str, Any]) -> str:
    """What one generation stored, once checked: it succeeded and stored one image whose bytes
    are an image, of the size and SHA-256 the operator recorded."""
    if result.get("state") != "success":
        raise ValueError(f"the generation ended {result.get('state')!r}")
    stored = result.get("stored") or []
    if len(stored) != 1:
        raise ValueError(f"expected one stored image, got {len(stored)}")
    (image,) = stored
    data = ObjectStoragePath(image["location"]).read_bytes()
    kind = image_type(data[:SIGNATURE_BYTES])
    if kind is None:
        raise ValueError(f"{image['location']} is not an image: it starts {data[:16]!r}")
    if len(data) != image["bytes"] or hashlib.sha256(data).hexdigest() != image["sha256"]:
        raise ValueError(f"{image['location']} is not the file the operator stored")
    return f"{kind}, {len(data)} bytes, {result.get('credits')} credits"


@task
def check_stored_image(result: dict[str, Any]) -> str:
    """Fail unless the generation stored its image (see :func:`_checked`)."""
    return _checked(result)


@task
def check_stored_batch(result: dict[str, Any], count: int) -> list[str]:
    """Fail unless every one of the batch's ``count`` items stored its image, in order."""
    items = result.get("items") or []
    if [item.get("index") for item in items] != list(range(count)):
        raise ValueError(f"expected items 0 to {count - 1}, got {len(items)}")
    if result.get("succeeded") != count or result.get("failed") != 0:
        raise ValueError(f"{result.get('failed')} of {count} items failed")
    return [_checked(item) for item in items]
