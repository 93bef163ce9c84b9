"""Which stored copy of an image the plugin serves: only the file a FLUX task itself wrote.

A result's ``stored`` entries come from the task's ``return_value`` XCom, which anyone allowed
to edit XComs can rewrite through Airflow's REST API, so nothing in them is trusted on its own.
A stored copy is served only when all of these hold:

* its location is, character for character, the file the operator writes for that image:
  ``<flux_task_id>_<index><ext>`` directly in the task instance's rendered ``download_to``
  (read from Airflow's rendered template fields, which the REST API cannot write), turned
  into a folder by the operator's own function. The file opened is the one rebuilt from those
  parts, never the recorded string; on a local disk its real path (symlinks resolved) must
  still be that file in that folder;
* it holds exactly the recorded number of bytes and they hash to the recorded SHA-256 (read
  with a bound of the recorded size + 1 before anything is sent);
* those bytes are a PNG, JPEG, WebP or GIF that ends where its format ends; the content type
  served is the one its signature names.

Refusals raise :class:`UnverifiedImageError`, whose message never names the file or its location.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from flux_provider.api.downloads import EXTENSION_BY_CONTENT_TYPE
from flux_provider.api.images import SIGNATURE_BYTES, image_type
from flux_provider.api.models import FLUX_TASK_ID_PATTERN

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

OPERATOR_EXTENSIONS = tuple(sorted(set(EXTENSION_BY_CONTENT_TYPE.values())))
"""The extensions the operator gives the files it writes."""

CHUNK_BYTES = 256 * 1024
SPOOL_BYTES = 8 << 20
"""Verified bytes are kept in memory up to this size, beyond it in a temporary file."""

_SHA256 = re.compile(r"[0-9a-f]{64}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LOCAL_PROTOCOLS = frozenset({"file", "local"})


class UnverifiedImageError(Exception):
    """A stored copy the plugin will not serve; the message says why, never where."""


@dataclass(frozen=True)
class VerifiedImage:
    """A stored copy checked against its result: its file name, type and bytes."""

    name: str
    content_type: str
    size: int
    content: IO[bytes]

    def chunks(self) -> Iterator[bytes]:
        """The verified bytes, from the first; closes them at the end."""
        with self.content:
            self.content.seek(0)
            while chunk := self.content.read(CHUNK_BYTES):
                yield chunk


def verified_image(
    download_to: Any, flux_task_id: Any, index: int, stored: Mapping[str, Any] | None
) -> VerifiedImage:
    """The stored copy of image ``index`` of flux task ``flux_task_id``, checked end to end.

    ``download_to`` is the task instance's rendered ``download_to`` (as Airflow's rendered
    template fields hold it), ``stored`` the result's record of that image (``location``,
    ``bytes``, ``sha256``). Works for any result shape: the caller picks the flux task id and
    the record. Raises :class:`UnverifiedImageError` unless every check of this module holds.
    """
    record = stored or {}
    path = stored_file(download_to, flux_task_id, index, record.get("location"))
    size, sha256 = _recorded_size_and_hash(record)
    with _open_stored(path) as source:
        content = read_recorded(source, size, sha256)
    try:
        content_type = raster_type(content, size)
    except UnverifiedImageError:
        content.close()
        raise
    return VerifiedImage(name=path.name, content_type=content_type, size=size, content=content)


def stored_file(
    download_to: Any, flux_task_id: Any, index: int, location: Any
) -> ObjectStoragePath:
    """The file the operator writes for image ``index`` of ``flux_task_id`` in ``download_to``,
    if ``location`` is exactly that file's address (nothing is opened or read).

    Anything else (another folder, scheme or bucket, ``..``, percent-encoding, another name)
    raises :class:`UnverifiedImageError`.
    """
    if not isinstance(flux_task_id, str) or not FLUX_TASK_ID_PATTERN.fullmatch(flux_task_id):
        raise UnverifiedImageError(
            "the result's flux task id is not one the operator names files by"
        )
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise UnverifiedImageError("the image index is not a position in the result")
    if not isinstance(location, str):
        raise UnverifiedImageError("the result records no location for this image")
    folder = download_folder(download_to)
    for extension in OPERATOR_EXTENSIONS:
        candidate = folder / f"{flux_task_id}_{index}{extension}"
        if str(candidate) == location:
            return candidate
    raise UnverifiedImageError(
        "the recorded location is not the file the operator writes for this image "
        "in the task instance's rendered download_to"
    )


def download_folder(rendered: Any) -> ObjectStoragePath:
    """The folder the operator wrote into, from the rendered value of its ``download_to``.

    Airflow keeps a ``str`` as it is and an ``ObjectStoragePath`` as its ``serialize()`` form
    (``{"path": ..., "conn_id": ..., "kwargs": ...}``); a string goes through the operator's
    own :func:`~flux_provider.hooks.storage.storage_path`, as it did when the task ran.
    """
    from airflow.sdk import ObjectStoragePath

    from flux_provider.api.errors import FluxError
    from flux_provider.hooks.storage import storage_path

    if isinstance(rendered, str):
        try:
            return storage_path(rendered)
        except (FluxError, ValueError, OSError):
            raise UnverifiedImageError("the rendered download_to is not a folder") from None
    if isinstance(rendered, Mapping) and isinstance(rendered.get("path"), str):
        conn_id = rendered.get("conn_id")
        options = rendered.get("kwargs")
        try:
            return ObjectStoragePath(
                rendered["path"],
                conn_id=conn_id if isinstance(conn_id, str) and conn_id else None,
                **(dict(options) if isinstance(options, Mapping) else {}),
            )
        except (TypeError, ValueError):
            raise UnverifiedImageError("the rendered download_to is not a folder") from None
    raise UnverifiedImageError(
        "no rendered download_to is recorded for this task instance (Airflow keeps rendered "
        "fields for a number of recent runs only)"
    )


def _recorded_size_and_hash(record: Mapping[str, Any]) -> tuple[int, str]:
    size = record.get("bytes")
    sha256 = record.get("sha256")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise UnverifiedImageError("the result records no valid size for this image")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise UnverifiedImageError("the result records no valid SHA-256 for this image")
    return size, sha256


def _open_stored(path: ObjectStoragePath) -> IO[bytes]:
    """``path`` opened for reading; on a local disk only if it is a regular file whose real
    path is still that name in its folder (no symlink planted in or on the way)."""
    try:
        if path.protocol not in _LOCAL_PROTOCOLS:
            opened: IO[bytes] = path.open("rb")  # type: ignore[no-untyped-call]
            return opened
        return _open_local(path.path, path.name)
    except UnverifiedImageError:
        raise
    except (FileNotFoundError, NotADirectoryError):
        raise UnverifiedImageError("the stored copy is missing") from None
    except Exception as error:
        # Object stores raise errors of their own (no filesystem for the scheme, credentials…).
        raise UnverifiedImageError(
            f"the stored copy cannot be read ({type(error).__name__})"
        ) from None


def _open_local(file_path: str, name: str) -> IO[bytes]:
    real = os.path.realpath(file_path)
    folder = os.path.realpath(os.path.dirname(file_path))
    if os.path.dirname(real) != folder or os.path.basename(real) != name:
        raise UnverifiedImageError("the stored copy's real path leaves its folder (a symlink)")
    # O_NOFOLLOW: a symlink swapped in after the check above is refused, not followed.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(real, flags)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnverifiedImageError("the stored copy is not a regular file")
    return os.fdopen(descriptor, "rb")


def read_recorded(source: IO[bytes], size: int, sha256: str) -> IO[bytes]:
    """The bytes of ``source``, if they are exactly ``size`` bytes hashing to ``sha256``.

    Reads at most ``size + 1`` bytes, so a larger file is refused without being read whole.
    """
    content = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned
    digest = hashlib.sha256()
    count = 0
    while count <= size:
        chunk = source.read(min(CHUNK_BYTES, size + 1 - count))
        if not chunk:
            break
        count += len(chunk)
        digest.update(chunk)
        content.write(chunk)
    if count != size or digest.hexdigest() != sha256:
        content.close()
        what = "size" if count != size else "SHA-256"
        raise UnverifiedImageError(f"the stored copy's {what} differs from the recorded one")
    content.seek(0)
    return content


def raster_type(content: IO[bytes], size: int) -> str:
    """The content type of ``content`` (``size`` bytes) by its signature: PNG, JPEG, WebP or
    GIF, each required to end where its format ends (so no HTML rides along after it)."""
    content.seek(0)
    kind = image_type(content.read(SIGNATURE_BYTES))
    whole = {
        "image/png": lambda: _png_ends_with_iend(content, size),
        "image/jpeg": lambda: _tail(content, size, 2) == b"\xff\xd9",
        "image/webp": lambda: _riff_size(content) == size,
        "image/gif": lambda: _tail(content, size, 1) == b";",
    }
    if kind is None or not whole[kind]():
        raise UnverifiedImageError("the stored copy is not a whole PNG, JPEG, WebP or GIF image")
    return kind


def _png_ends_with_iend(content: IO[bytes], size: int) -> bool:
    """Whether PNG chunks, walked from the signature, end with ``IEND`` at the last byte."""
    position = len(_PNG_SIGNATURE)
    while position + 12 <= size:
        content.seek(position)
        header = content.read(8)
        kind = header[4:8]
        if len(header) < 8 or not kind.isalpha():
            return False
        position += 12 + int.from_bytes(header[:4], "big")
        if kind == b"IEND":
            return position == size
    return False


def _tail(content: IO[bytes], size: int, count: int) -> bytes:
    content.seek(max(0, size - count))
    return content.read(count)


def _riff_size(content: IO[bytes]) -> int:
    content.seek(4)
    return int.from_bytes(content.read(4), "little") + 8
