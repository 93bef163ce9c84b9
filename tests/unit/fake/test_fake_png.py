"""The fake API's PNG encoder and deterministic placeholder images."""

from __future__ import annotations

import struct
import zlib

import pytest

from flux_provider.testing import encode_png, image_size, render_image

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, checking every CRC."""
    assert png[:8] == SIGNATURE
    found = []
    offset = 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        data = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data), f"bad CRC in {kind!r}"
        found.append((kind, data))
        offset += 12 + length
    assert offset == len(png)
    return found


def decode(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of a PNG written by encode_png (filter type 0 only)."""
    parts = chunks(png)
    assert [kind for kind, _ in parts] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", parts[0][1]
    )
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(parts[1][1])
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [row[1:] for row in rows]


def test_encode_png_round_trips_pixels() -> None:
    rows = [bytes([255, 0, 0, 0, 255, 0]), bytes([0, 0, 255, 10, 20, 30])]

    assert decode(encode_png(2, 2, rows)) == (2, 2, rows)


@pytest.mark.parametrize(
    ("width", "height", "rows", "fragment"),
    [
        (0, 1, [b""], "positive"),
        (1, 2, [b"\x00\x00\x00"], "expected 2 rows"),
        (2, 1, [b"\x00\x00\x00"], "row 0 has 3 bytes"),
    ],
)
def test_encode_png_rejects_mismatched_rows(
    width: int, height: int, rows: list[bytes], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        encode_png(width, height, rows)


@pytest.mark.parametrize(
    ("aspect_ratio", "size"),
    [
        ("1:1", (256, 256)),
        ("16:9", (256, 144)),
        ("9:16", (144, 256)),
        ("4:3", (256, 192)),
        ("3:2", (256, 171)),
        ("21:9", (256, 110)),
        ("auto", (256, 256)),
        (None, (256, 256)),
        ("0:1", (256, 256)),
    ],
)
def test_size_follows_aspect_ratio(aspect_ratio: str | None, size: tuple[int, int]) -> None:
    assert image_size(aspect_ratio) == size
    width, height, _ = decode(render_image("a boat", 1, aspect_ratio))
    assert (width, height) == size


def test_non_string_aspect_ratio_gives_a_square() -> None:
    assert decode(render_image("a boat", 1, 16))[:2] == (256, 256)


def test_render_is_deterministic_per_prompt_and_seed() -> None:
    image = render_image("a boat at dawn", 42, "16:9")

    assert render_image("a boat at dawn", 42, "16:9") == image
    assert render_image("a boat at dawn", 43, "16:9") != image
    assert render_image("a boat at dusk", 42, "16:9") != image
    assert render_image("a boat at dawn", None, "16:9") != image


def test_render_draws_more_than_one_colour() -> None:
    _, _, rows = decode(render_image("a boat", 5, "1:1"))

    pixels = {row[x : x + 3] for row in rows for x in range(0, len(row), 3)}
    assert len(pixels) > 50
