"""The system tests' final check: it passes a stored image and fails anything else."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from flux_provider.testing import render_image
from tests.system.flux.checks import check_stored_batch, check_stored_image

check = check_stored_image.function


def _result(path: Path, data: bytes, **changes: Any) -> dict[str, Any]:
    stored = {
        "location": path.as_uri(),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return {"state": "success", "credits": 6.0, "stored": [stored], **changes}


def test_a_stored_png_passes(tmp_path: Path) -> None:
    data = render_image("a teapot", 1, "1:1")
    path = tmp_path / "0.png"
    path.write_bytes(data)

    assert check(_result(path, data)) == f"image/png, {len(data)} bytes, 6.0 credits"


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


def test_a_batch_passes_only_when_every_item_stored_its_image(tmp_path: Path) -> None:
    data = render_image("a teapot", 1, "1:1")
    (tmp_path / "0.png").write_bytes(data)
    item = {**_result(tmp_path / "0.png", data), "index": 0}
    batch = {"items": [item, {**item, "index": 1}], "succeeded": 2, "failed": 0}
    assert len(check_stored_batch.function(batch, 2)) == 2
    with pytest.raises(ValueError, match="1 of 2 items failed"):
        check_stored_batch.function({**batch, "succeeded": 1, "failed": 1}, 2)
    with pytest.raises(ValueError, match="expected items 0 to 2"):
        check_stored_batch.function(batch, 3)
