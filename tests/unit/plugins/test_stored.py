"""The check that decides which stored copy the images plugin serves (no Airflow database)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import fsspec  # type: ignore[import-untyped]
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import attach

from flux_provider.hooks.storage import storage_path
from flux_provider.plugins.stored import (
    UnverifiedImageError,
    download_folder,
    raster_type,
    read_recorded,
    stored_file,
    verified_image,
)
from flux_provider.testing import render_image

FLUX_ID = "task_0123456789abcdef"
PNG = render_image("a stored image", 7, "1:1")
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32 + b"\xff\xd9"
GIF = b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 16 + b";"
WEBP = b"RIFF" + (4 + 18).to_bytes(4, "little") + b"WEBP" + b"VP8L" + b"\x00" * 14
SVG = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(document.domain)</script></svg>"
HTML = b"<!doctype html><script>alert(document.domain)</script>"
POLYGLOT = b"\x89PNG\r\n\x1a\n<html><script>alert(document.domain)</script></html>"


def _record(location: str, content: bytes) -> dict[str, Any]:
    return {
        "location": location,
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def _store(folder: Path, content: bytes = PNG, name: str = f"{FLUX_ID}_0.png") -> dict[str, Any]:
    """An image stored as the operator stores it, and the operator's record of it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return _record(str(storage_path(str(folder)) / name), content)


def _refusal(download_to: Any, record: dict[str, Any], index: int = 0) -> str:
    with pytest.raises(UnverifiedImageError) as refused:
        verified_image(download_to, FLUX_ID, index, record)
    return str(refused.value)


def test_the_genuine_image_is_served_with_its_bytes_and_signature_type(tmp_path: Path) -> None:
    record = _store(tmp_path / "out")
    image = verified_image(str(tmp_path / "out"), FLUX_ID, 0, record)
    assert (image.name, image.content_type, image.size) == (
        f"{FLUX_ID}_0.png",
        "image/png",
        len(PNG),
    )
    assert b"".join(image.chunks()) == PNG


@pytest.mark.parametrize(
    "location",
    [
        pytest.param(lambda base: "file:///etc/passwd", id="absolute"),
        pytest.param(lambda base: f"{base}/../../../etc/passwd", id="dot-dot-climb"),
        pytest.param(lambda base: f"{base}/%2e%2e/%2e%2e/etc/passwd", id="percent-encoded-climb"),
        pytest.param(lambda base: f"{base}/../out/{FLUX_ID}_0.png", id="climb-and-back"),
        pytest.param(lambda base: f"{base}/./{FLUX_ID}_0.png", id="dot-segment"),
        pytest.param(lambda base: f"{base}//{FLUX_ID}_0.png", id="double-slash"),
        pytest.param(lambda base: f"{base}/{FLUX_ID}_0.svg", id="other-extension"),
        pytest.param(lambda base: f"{base}/task_fedcba9876543210_0.png", id="other-flux-task"),
        pytest.param(lambda base: f"{base}/{FLUX_ID}_1.png", id="other-index"),
        pytest.param(lambda base: f"{base}/sub/{FLUX_ID}_0.png", id="subfolder"),
        pytest.param(
            lambda base: base.replace("file://", "local://") + f"/{FLUX_ID}_0.png", id="scheme"
        ),
        pytest.param(
            lambda base: base.removeprefix("file://") + f"/{FLUX_ID}_0.png", id="no-scheme"
        ),
        pytest.param(
            lambda base: f"memory:/{base.removeprefix('file://')}/{FLUX_ID}_0.png", id="bucket"
        ),
    ],
)
def test_a_location_other_than_the_operators_file_is_refused(tmp_path: Path, location: Any) -> None:
    folder = tmp_path / "out"
    _store(folder)
    base = str(storage_path(str(folder)))
    refused = location(base)
    with pytest.raises(UnverifiedImageError) as error:
        stored_file(str(folder), FLUX_ID, 0, refused)
    assert "passwd" not in str(error.value)
    assert str(tmp_path) not in str(error.value)


@pytest.mark.parametrize("flux_id", ["../../etc/passwd", "a/b", "", "task_1\n", 7, None, "%2e%2e"])
def test_a_flux_task_id_that_is_no_file_name_is_refused(tmp_path: Path, flux_id: Any) -> None:
    with pytest.raises(UnverifiedImageError, match="flux task id"):
        stored_file(str(tmp_path), flux_id, 0, f"file://{tmp_path}/{flux_id}_0.png")


@pytest.mark.parametrize("rendered", [None, "", 42, ["/tmp"], {"conn_id": None}, "***"])
def test_without_a_usable_rendered_download_to_nothing_is_served(
    tmp_path: Path, rendered: Any
) -> None:
    record = _store(tmp_path / "out")
    assert _refusal(rendered, record)


def test_the_rendered_form_of_an_object_storage_path_is_its_folder() -> None:
    attach("memory", fs=fsspec.filesystem("memory"))
    folder = ObjectStoragePath("memory://flux-unit-bucket/out")
    rendered = folder.serialize()  # what Airflow keeps of an ObjectStoragePath template field
    assert str(download_folder(rendered)) == str(folder)
    location = str(folder / f"{FLUX_ID}_0.png")
    assert str(stored_file(rendered, FLUX_ID, 0, location)) == location
    other_bucket = location.replace("flux-unit-bucket", "flux-other-bucket")
    with pytest.raises(UnverifiedImageError):
        stored_file(rendered, FLUX_ID, 0, other_bucket)


def test_a_store_that_cannot_be_read_is_a_refusal_not_an_error() -> None:
    # A store Airflow has no filesystem for (no connection attached under that id).
    folder = ObjectStoragePath("memory://flux-unit-bucket/out", conn_id="flux_not_attached")
    record = _record(str(folder / f"{FLUX_ID}_0.png"), PNG)
    assert "cannot be read" in _refusal(folder.serialize(), record)
    # Folders that cannot be built (or, on older universal-pathlib, opened) are refusals too.
    for rendered in (
        {"path": "flux-no-such-scheme://bucket/out"},
        {"path": "memory://bucket/out", "kwargs": {"conn_id": "twice"}},
    ):
        assert _refusal(rendered, {**record, "location": f"{rendered['path']}/{FLUX_ID}_0.png"})


def test_a_string_download_to_is_read_as_the_operator_reads_it(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    # The operator resolves a local folder (symlinks included) before it writes.
    assert str(download_folder(str(tmp_path / "link"))) == (tmp_path / "real").as_uri()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sha256": hashlib.sha256(b"other").hexdigest()}, "SHA-256 differs"),
        ({"bytes": len(PNG) - 1}, "size differs"),
        ({"bytes": len(PNG) + 1}, "size differs"),
        ({"sha256": "not a hash"}, "no valid SHA-256"),
        ({"bytes": True}, "no valid size"),
        ({"bytes": 0}, "no valid size"),
    ],
)
def test_bytes_that_differ_from_the_record_are_refused(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    record = _store(tmp_path / "out")
    assert reason in _refusal(str(tmp_path / "out"), {**record, **change})


def test_the_file_is_read_no_further_than_the_recorded_size_plus_one() -> None:
    source = io.BytesIO(b"x" * 10_000_000)
    with pytest.raises(UnverifiedImageError, match="size differs"):
        read_recorded(source, 100, hashlib.sha256(b"x" * 100).hexdigest())
    assert source.tell() == 101


def test_a_symlink_planted_under_the_operators_name_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "airflow.cfg"
    secret.write_bytes(PNG)  # even with bytes that would pass every other check
    folder = tmp_path / "out"
    record = _store(folder)
    (folder / f"{FLUX_ID}_0.png").unlink()
    (folder / f"{FLUX_ID}_0.png").symlink_to(secret)
    assert "symlink" in _refusal(str(folder), record)
    # Nor to a sibling inside the folder.
    (folder / "sibling.png").write_bytes(PNG)
    (folder / f"{FLUX_ID}_0.png").unlink()
    (folder / f"{FLUX_ID}_0.png").symlink_to(folder / "sibling.png")
    assert "symlink" in _refusal(str(folder), record)


def test_a_fifo_or_a_folder_under_the_operators_name_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "out"
    record = _store(folder)
    (folder / f"{FLUX_ID}_0.png").unlink()
    os.mkfifo(folder / f"{FLUX_ID}_0.png")
    assert "not a regular file" in _refusal(str(folder), record)
    (folder / f"{FLUX_ID}_0.png").unlink()
    (folder / f"{FLUX_ID}_0.png").mkdir()
    assert _refusal(str(folder), record)


def test_a_missing_copy_is_refused(tmp_path: Path) -> None:
    record = _store(tmp_path / "out")
    (tmp_path / "out" / f"{FLUX_ID}_0.png").unlink()
    assert "missing" in _refusal(str(tmp_path / "out"), record)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")],
)
def test_the_content_type_comes_from_the_bytes(content: bytes, content_type: str) -> None:
    assert raster_type(io.BytesIO(content), len(content)) == content_type


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(SVG, id="svg"),
        pytest.param(HTML, id="html"),
        pytest.param(POLYGLOT, id="png-signature-then-html"),
        pytest.param(PNG + HTML, id="png-then-html"),
        pytest.param(PNG[:-12], id="png-without-iend"),
        pytest.param(JPEG + HTML, id="jpeg-then-html"),
        pytest.param(GIF + HTML, id="gif-then-html"),
        pytest.param(WEBP + HTML, id="webp-then-html"),
        pytest.param(b"", id="empty"),
    ],
)
def test_anything_but_a_whole_raster_image_is_refused(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(UnverifiedImageError, match="not a whole PNG"):
        raster_type(io.BytesIO(content), len(content))
    if content:
        # Stored under the operator's name with the right size and hash, it is still refused.
        record = _store(tmp_path / "out", content)
        assert "not a whole PNG" in _refusal(str(tmp_path / "out"), record)
