"""Image types from their signature: the one list the provider reads, stores and serves."""

from __future__ import annotations

import pytest

from flux_provider.api.images import EXTENSIONS, IMAGE_TYPES, image_type
from flux_provider.testing import render_image


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (render_image("a teapot", 1, "1:1"), "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"GIF87a\x01\x00", "image/gif"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'>", None),
        (b'{"code": 200}', None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"", None),
    ],
)
def test_image_type(data: bytes, expected: str | None) -> None:
    assert image_type(data) == expected


def test_every_type_has_an_extension() -> None:
    assert set(EXTENSIONS) == set(IMAGE_TYPES)
