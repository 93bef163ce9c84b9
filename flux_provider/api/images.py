"""Which raster image some bytes are, from their signature (never from a name or a header).

The one list of image types the provider reads, stores and serves: PNG, JPEG, WebP and GIF.
"""

from __future__ import annotations

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
"""The raster types the provider accepts, in the order they are tried."""

EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
"""The file extension of each type."""

SIGNATURE_BYTES = 12
"""Bytes enough to tell every type apart."""


def image_type(head: bytes) -> str | None:
    """The type of an image that starts with ``head`` (its first bytes), or ``None``."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None
