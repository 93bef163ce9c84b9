"""The system tests' final check: it passes a stored image and fails anything else."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from flux_provider.testing import render_image
from tests.system.flux.checks import check_stored_image, image_format

check = check_stored_image.function


def _result(path: Path, data: bytes, **changes: Any) -> dict[str, Any]:
    stored = {
        "location": path.as_uri(),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return {"state": "success", "credits": 6.0, "stored": [stored], **changes}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (render_image("a teapot", 1, "1:1"), "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"GIF89a\x01\x00", "gif"),
        (b'{"code": 200}', None),
        (b"", None),
    ],
)
def test_image_format(data: bytes, expected: str | None) -> None:
    assert image_format(data) == expected


def test_a_stored_png_passes(tmp_path: Path) -> None:
    data = render_image("a teapot", 1, "1:1")
    path = tmp_path / "0.png"
    path.write_bytes(data)

    assert check(_result(path, data)) == f"png, {len(data)} bytes, 6.0 credits"


def test_what_is_not_a_stored_image_fails(tmp_path: Path) -> None:
    data = render_image("a teapot", 1, "1:1")
    page = tmp_path / "0.png"
    page.write_bytes(b"<html>expired</html>")
    image = tmp_path / "1.png"
    image.write_bytes(data)

    with pytest.raises(ValueError, match="is not an image"):
        check(_result(page, b"<html>expired</html>"))
    with pytest.raises(ValueError, match="not the file the operator stored"):
        check(_result(image, data[:-1]))
    with pytest.raises(ValueError, match="expected one stored image, got 0"):
        check(_result(image, data, stored=[]))
    with pytest.raises(ValueError, match="ended 'failed'"):
        check(_result(image, data, state="failed"))
