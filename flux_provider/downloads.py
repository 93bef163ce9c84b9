"""Copy result images to durable storage: streamed, size-capped, checked, written atomically.

Result URLs expire (24 hours to 14 days), so the operator can copy each image
where the rest of the pipeline reads it. This module knows nothing of Airflow:
the target is any path object with ``/``, ``open``, ``rename`` and ``unlink``
(Airflow's ``ObjectStoragePath`` for ``file://``, ``s3://``, ``gs://``…, or a
``pathlib.Path``).

Each image is streamed in chunks (never held whole in memory) into a temporary
name beside the final one, hashed on the way, then renamed; a failure at any
point removes the temporary file, so the final name only ever holds a whole
image. File names come from the flux task id and the result's index, the
extension from the answer's content type (or the bytes' signature), never from
the URL. Downloads never carry the API key.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any, Protocol

import httpx

from flux_provider.client import shared_ssl_context
from flux_provider.errors import FluxError, TransportError
from flux_provider.models import FLUX_TASK_ID_PATTERN

DEFAULT_MAX_IMAGE_BYTES = 64 << 20
"""A 2K FLUX.2 PNG is under 16 MiB; 64 MiB leaves room but stops a hostile host filling a disk."""

CHUNK_BYTES = 1 << 20
DOWNLOAD_ATTEMPTS = 3
EXPIRED_STATUSES = frozenset({403, 404, 410})

EXTENSION_BY_CONTENT_TYPE = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
}
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"))


class ResultExpiredError(FluxError):
    """The result URL no longer serves the image (403/404/410): it expired."""


class ResultRejectedError(FluxError):
    """The result is not an acceptable image: wrong content type or over the size cap."""


class StorageTarget(Protocol):
    """The path operations a download target must offer (``ObjectStoragePath`` has them)."""

    def __truediv__(self, name: str) -> StorageTarget: ...

    def open(self, mode: str = ...) -> IO[bytes]: ...

    def rename(self, target: Any) -> Any: ...

    def unlink(self, missing_ok: bool = ...) -> None: ...

    def mkdir(self, mode: int = ..., parents: bool = ..., exist_ok: bool = ...) -> None: ...


@dataclass(frozen=True)
class StoredImage:
    """One copied result: where it is, its size and its SHA-256."""

    location: str
    bytes: int
    sha256: str
    content_type: str
    source_url: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (goes to XCom and asset events)."""
        return asdict(self)


def _extension(content_type: str | None, first_chunk: bytes, url: str) -> tuple[str, str]:
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared in EXTENSION_BY_CONTENT_TYPE:
        return EXTENSION_BY_CONTENT_TYPE[declared], declared
    if declared and declared != "application/octet-stream":
        raise ResultRejectedError(
            f"the result at {url} is {declared!r}, not an image "
            f"(accepted: {', '.join(sorted(EXTENSION_BY_CONTENT_TYPE))})"
        )
    for signature, extension in _SIGNATURES:
        if first_chunk.startswith(signature):
            return extension, "image/png" if extension == ".png" else "image/jpeg"
    if first_chunk[:4] == b"RIFF" and first_chunk[8:12] == b"WEBP":
        return ".webp", "image/webp"
    raise ResultRejectedError(f"the result at {url} has no content type and is not a known image")


class ResultDownloader:
    """Copies result images into a storage folder.

    :param max_bytes: per-image cap, enforced while streaming.
    :param attempts: tries per image on transient errors (5xx, resets, timeouts).
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        attempts: int = DOWNLOAD_ATTEMPTS,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 60.0,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.attempts = max(1, attempts)
        self._sleep = sleep
        # No auth header: result URLs are public links, and the key must not travel to them.
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=True,
            verify=shared_ssl_context(),
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def download_all(
        self, urls: Sequence[str], folder: StorageTarget, flux_task_id: str
    ) -> list[StoredImage]:
        """Copy every URL into ``folder`` as ``<flux_task_id>_<index><ext>``."""
        if not FLUX_TASK_ID_PATTERN.match(flux_task_id):
            raise ValueError(f"unsafe flux task id for a file name: {flux_task_id[:60]!r}")
        folder.mkdir(parents=True, exist_ok=True)
        return [
            self.download(url, folder, f"{flux_task_id}_{index}") for index, url in enumerate(urls)
        ]

    def download(self, url: str, folder: StorageTarget, stem: str) -> StoredImage:
        """Copy one URL to ``folder/<stem><ext>``, retrying transient failures."""
        for attempt in range(1, self.attempts + 1):
            try:
                return self._download_once(url, folder, stem)
            except FluxError as error:
                if not error.retryable or attempt == self.attempts:
                    raise
                self._sleep(min(2.0**attempt, 30.0) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def _download_once(self, url: str, folder: StorageTarget, stem: str) -> StoredImage:
        try:
            with self._http.stream("GET", url) as response:
                self._check_status(response, url)
                chunks = response.iter_bytes(CHUNK_BYTES)
                first = next(chunks, b"")
                extension, content_type = _extension(
                    response.headers.get("content-type"), first, url
                )
                final = folder / f"{stem}{extension}"
                size, digest = self._write_atomically(final, folder, _prepend(first, chunks), url)
        except httpx.TransportError as exc:
            raise TransportError(f"downloading {url} failed: {type(exc).__name__}: {exc}") from None
        return StoredImage(str(final), size, digest, content_type, url)

    @staticmethod
    def _check_status(response: httpx.Response, url: str) -> None:
        status = response.status_code
        if status in EXPIRED_STATUSES:
            raise ResultExpiredError(
                f"the result URL {url} answered {status}: it has expired (result URLs live "
                "24 hours to 14 days); generate the image again",
                status_code=status,
            )
        if status >= 400:
            raise FluxError(
                f"downloading {url} failed with HTTP {status}",
                status_code=status,
                retryable=status >= 500 or status == 429,
            )

    def _write_atomically(
        self, final: StorageTarget, folder: StorageTarget, chunks: Iterator[bytes], url: str
    ) -> tuple[int, str]:
        partial = folder / f".{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as sink:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ResultRejectedError(
                            f"the result at {url} is over the {self.max_bytes}-byte cap"
                        )
                    digest.update(chunk)
                    sink.write(chunk)
            partial.rename(final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
