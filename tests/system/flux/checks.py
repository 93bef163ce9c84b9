"""The check the FLUX system tests end with: the generation stored an image."""

from __future__ import annotations

import hashlib
from typing import Any

from airflow.sdk import ObjectStoragePath, task

__all__ = ["check_stored_image", "image_format"]

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


def image_format(data: bytes) -> str | None:
    """The image format ``data`` starts like (``png``, ``jpeg``, ``webp``, ``gif``), or ``None``."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for signature, name in _SIGNATURES.items():
        if data.startswith(signature):
            return name
    return None


@task
def check_stored_image(result: dict[str, Any]) -> str:
    """Fail unless the generation succeeded and stored one image whose bytes are an image, of
    the size and SHA-256 the operator recorded."""
    if result.get("state") != "success":
        raise ValueError(f"the generation ended {result.get('state')!r}")
    stored = result.get("stored") or []
    if len(stored) != 1:
        raise ValueError(f"expected one stored image, got {len(stored)}")
    (image,) = stored
    data = ObjectStoragePath(image["location"]).read_bytes()
    kind = image_format(data)
    if kind is None:
        raise ValueError(f"{image['location']} is not an image: it starts {data[:16]!r}")
    if len(data) != image["bytes"] or hashlib.sha256(data).hexdigest() != image["sha256"]:
        raise ValueError(f"{image['location']} is not the file the operator stored")
    return f"{kind}, {len(data)} bytes, {result.get('credits')} credits"
