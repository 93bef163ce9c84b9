"""Minimal PNG encoder and the deterministic placeholder images the fake API serves."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["LONG_SIDE", "PNG_SIGNATURE", "encode_png", "image_size", "render_image"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
"""The eight bytes every PNG file starts with."""

LONG_SIDE = 256
"""Length in pixels of the longer side of every rendered image."""

_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(width: int, height: int, rgb_rows: Sequence[bytes]) -> bytes:
    """Encode an 8-bit RGB image as PNG bytes.

    Args:
        width: Image width in pixels (at least 1).
        height: Image height in pixels (at least 1).
        rgb_rows: ``height`` rows, each ``width * 3`` bytes of R, G, B samples.

    Raises:
        ValueError: If the dimensions are not positive or the rows do not match them.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image dimensions must be positive, got {width}x{height}")
    if len(rgb_rows) != height:
        raise ValueError(f"expected {height} rows, got {len(rgb_rows)}")
    row_length = width * 3
    for number, row in enumerate(rgb_rows):
        if len(row) != row_length:
            raise ValueError(f"row {number} has {len(row)} bytes, expected {row_length}")
    # Each scanline is prefixed with filter type 0 (None).
    raw = b"".join(b"\x00" + bytes(row) for row in rgb_rows)
    # Bit depth 8, colour type 2 (truecolour), default compression, filter and no interlace.
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def image_size(aspect_ratio: str | None) -> tuple[int, int]:
    """Return ``(width, height)`` for an aspect ratio such as ``"16:9"``.

    The longer side is :data:`LONG_SIDE` pixels. A missing or unparsable ratio (for example
    ``"auto"``) gives a square image.
    """
    match = _RATIO.match(aspect_ratio or "")
    if match is None:
        return LONG_SIDE, LONG_SIDE
    ratio_w, ratio_h = float(match.group(1)), float(match.group(2))
    if ratio_w <= 0 or ratio_h <= 0:
        return LONG_SIDE, LONG_SIDE
    if ratio_w >= ratio_h:
        return LONG_SIDE, max(1, round(LONG_SIDE * ratio_h / ratio_w))
    return max(1, round(LONG_SIDE * ratio_w / ratio_h)), LONG_SIDE


def _blend(start: bytes, end: bytes, fraction: float) -> bytes:
    return bytes(round(a + (b - a) * fraction) for a, b in zip(start, end, strict=True))


@lru_cache(maxsize=128)
def _render(prompt: str, seed: str, aspect_ratio: str | None) -> bytes:
    width, height = image_size(aspect_ratio)
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    start, end, accent = digest[0:3], digest[3:6], digest[6:9]
    step_x, step_y = 1 + digest[9] % 3, 1 + digest[10] % 3
    period = 6 + digest[11] % 20
    # Colours depend only on x*step_x + y*step_y, so precompute them once per diagonal.
    span = max(1, (width - 1) * step_x + (height - 1) * step_y)
    gradient = [_blend(start, end, i / span) for i in range(span + 1)]
    striped = [_blend(colour, accent, 0.35) for colour in gradient]
    rows = []
    for y in range(height):
        rows.append(
            b"".join(
                (striped if ((x - y) // period) & 1 else gradient)[x * step_x + y * step_y]
                for x in range(width)
            )
        )
    return encode_png(width, height, rows)


def render_image(prompt: str, seed: object, aspect_ratio: object) -> bytes:
    """Render the deterministic placeholder PNG for a generation request.

    The same ``(prompt, seed, aspect_ratio)`` always gives the same bytes; the colours and
    stripe pattern derive from ``sha256(prompt, seed)`` and the size from
    :func:`image_size`. ``seed`` and ``aspect_ratio`` are taken as found in the request's
    ``input`` (any JSON value, or ``None`` when absent).
    """
    seed_text = "" if seed is None else str(seed)
    ratio = aspect_ratio if isinstance(aspect_ratio, str) else None
    return _render(prompt, seed_text, ratio)
