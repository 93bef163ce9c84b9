"""What is planted at an image's final name never redirects the write.

Someone who can write into ``download_to`` plants, at the name the next image will get, a
symlink to a file elsewhere, a symlink to a directory elsewhere, or a real directory. The
image must land at its own name (a symlink there is replaced, never followed), a directory
there is a clear non-retryable error naming the file, and what the result records (location,
size, SHA-256) must describe the file actually at that location. Both kinds of local target
are tried: ``pathlib.Path`` and ``ObjectStoragePath("file://...")``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from flux_provider.api.downloads import ResultDownloader, StoredImage
from flux_provider.api.errors import FluxError
from flux_provider.testing import render_image
from tests.integration.security.hostile import Answer, HostileServer

PNG = render_image("targets", 1, "1:1")
TASK_ID = "task_plant_1"
FINAL = f"{TASK_ID}_0.png"

Target = Callable[[Path], Any]
TARGETS: dict[str, Target] = {
    "pathlib": lambda folder: folder,
    "object-storage-file": lambda folder: ObjectStoragePath(folder.as_uri()),
}


@pytest.fixture
def images() -> Iterator[HostileServer]:
    with HostileServer({"/ok.png": Answer(prefix=PNG, content_type="image/png")}) as server:
        yield server


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """``download_to`` and a folder elsewhere that an attacker points at."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    return out, elsewhere


def _download(images: HostileServer, target: Any) -> StoredImage:
    downloader = ResultDownloader(attempts=1, sleep=lambda s: None, allow_private_hosts=True)
    try:
        (stored,) = downloader.download_all([images.url("/ok.png")], target, TASK_ID)
    finally:
        downloader.close()
    return stored


def _check_stored_at_its_own_name(stored: StoredImage, out: Path) -> None:
    final = out / FINAL
    assert not final.is_symlink()
    assert final.is_file()
    assert final.read_bytes() == PNG
    assert stored.location.endswith(f"/out/{FINAL}")
    assert stored.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()
    assert stored.bytes == final.stat().st_size
    assert sorted(p.name for p in out.iterdir()) == [FINAL]  # no partial file left


@pytest.mark.parametrize("kind", list(TARGETS))
def test_a_symlink_to_a_directory_at_the_final_name_is_replaced(
    images: HostileServer, folders: tuple[Path, Path], kind: str
) -> None:
    out, elsewhere = folders
    (out / FINAL).symlink_to(elsewhere, target_is_directory=True)
    stored = _download(images, TARGETS[kind](out))
    _check_stored_at_its_own_name(stored, out)
    assert list(elsewhere.iterdir()) == []  # nothing moved into the link's target


@pytest.mark.parametrize("kind", list(TARGETS))
def test_a_symlink_to_a_file_at_the_final_name_is_replaced(
    images: HostileServer, folders: tuple[Path, Path], kind: str
) -> None:
    out, elsewhere = folders
    victim = elsewhere / "victim.txt"
    victim.write_bytes(b"precious")
    (out / FINAL).symlink_to(victim)
    stored = _download(images, TARGETS[kind](out))
    _check_stored_at_its_own_name(stored, out)
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("kind", list(TARGETS))
def test_a_dangling_symlink_at_the_final_name_is_replaced(
    images: HostileServer, folders: tuple[Path, Path], kind: str
) -> None:
    out, elsewhere = folders
    (out / FINAL).symlink_to(elsewhere / "not-yet")
    stored = _download(images, TARGETS[kind](out))
    _check_stored_at_its_own_name(stored, out)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("kind", list(TARGETS))
def test_a_directory_at_the_final_name_is_a_clear_error(
    images: HostileServer, folders: tuple[Path, Path], kind: str
) -> None:
    out, _ = folders
    planted = out / FINAL
    planted.mkdir()
    (planted / "inside.txt").write_bytes(b"kept")
    with pytest.raises(FluxError, match="is a directory") as info:
        _download(images, TARGETS[kind](out))
    assert not info.value.retryable
    assert FINAL in str(info.value)
    assert sorted(os.listdir(planted)) == ["inside.txt"]
    assert sorted(p.name for p in out.iterdir()) == [FINAL]  # no partial file left
