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

Every request, including each redirect hop, is checked before it is sent:
only ``http``/``https``, never a link-local (cloud metadata), multicast,
unspecified or reserved address, and, unless private targets are allowed
(``allow_private_hosts``, true only when the API itself is on a private
network, see :func:`private_hosts_allowed`), never a loopback or private one
either. Host names are resolved and every address they resolve to is checked;
then the connection itself resolves the name once more, checks every address
again and connects to one of those checked addresses (the TLS server name and
the ``Host`` header stay the URL's name), so a name that changes its answer
(DNS rebinding) never gets a byte sent to an address that was not checked.
Through an environment proxy the proxy connects: only the check before
sending applies. A redirect's own body is never read.

Each attempt is bounded in time as a whole (``download_timeout``: connecting,
redirects and the whole body), and the body is read raw and decoded within
the size cap, counted on the wire and once decoded
(:mod:`flux_provider.api.decoding`). On local storage (``pathlib.Path``,
``file://``) the final rename replaces whatever symlink is at the final name
instead of following it, and refuses a directory there.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import IO, Any, Literal, Protocol
from urllib.parse import urlsplit

import httpcore
import httpx

from flux_provider.api.config import KEEPALIVE_EXPIRY, is_loopback_host, shared_ssl_context
from flux_provider.api.decoding import ACCEPT_ENCODING, BodyError, BodyTooLargeError, decoded_body
from flux_provider.api.errors import FluxError, RequestTimeoutError, TransportError
from flux_provider.api.formatting import bytes_text, seconds_text
from flux_provider.api.images import image_type
from flux_provider.api.models import FLUX_TASK_ID_PATTERN
from flux_provider.api.network import BoundedTransport, Deadline, request_deadline
from flux_provider.api.retry import Attempts, RetryPolicy

DEFAULT_MAX_IMAGE_BYTES = 64 << 20
"""A 2K FLUX.2 PNG is under 16 MiB; 64 MiB leaves room but stops a hostile host filling a disk."""

DEFAULT_DOWNLOAD_TIMEOUT = 300.0
"""Seconds one download attempt may take in all (connecting, redirects, the whole body): a
16 MiB image needs only 55 KiB/s to make it."""
DEFAULT_READ_TIMEOUT = 60.0
"""Seconds any single network step (connect aside: at most 10 s) may wait."""
DOWNLOAD_CONNECTIONS = 8
SNIFF_BYTES = 16
"""Bytes enough to recognise an image by its signature."""
DOWNLOAD_ATTEMPTS = 3
MAX_REDIRECTS = 5
EXPIRED_STATUSES = frozenset({403, 404, 410})

EXTENSION_BY_CONTENT_TYPE = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
}
_LOCAL_PROTOCOLS = frozenset({"file", "local"})


class ResultExpiredError(FluxError):
    """The result URL no longer serves the image (403/404/410): it expired."""


class ResultRejectedError(FluxError):
    """The result is refused: a forbidden URL or address, not an image, or over the size cap."""


AddressKind = Literal["public", "private", "forbidden"]
"""``public``: routable on the internet; ``private``: loopback or a private network;
``forbidden``: link-local (cloud metadata), multicast, unspecified or reserved."""

Resolver = Callable[[str], Sequence[str]]
"""Maps a host name to the IP addresses a connection to it may use."""


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (``getaddrinfo``, as the connection itself does)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address if it is one, in any form the resolver accepts (``127.1``…)."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        # The legacy IPv4 forms (2130706433, 0x7f.1, 0177.0.0.1) that getaddrinfo accepts too.
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def address_kind(address: str) -> AddressKind:
    """Classify one IP address (see :data:`AddressKind`)."""
    ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        return "forbidden"
    if ip.is_loopback:
        return "private"
    if ip.is_global:
        return "public"
    return "forbidden" if ip.is_reserved else "private"


def private_hosts_allowed(base_url: str, *, resolve: Resolver = resolve_host) -> bool:
    """Whether result URLs may point at private hosts: only when the API itself is private.

    True when the API base URL's host is loopback (the fake API) or resolves
    only to private addresses (an internal gateway); false for a public API,
    and when the host cannot be resolved (fail closed).
    """
    try:
        host = urlsplit(base_url).hostname
        if not host:
            return False
        if is_loopback_host(host):
            return True
        literal = _literal_address(host)
        addresses = [str(literal)] if literal is not None else list(resolve(host))
        return bool(addresses) and all(address_kind(a) != "public" for a in addresses)
    except (OSError, ValueError, UnicodeError):
        return False


def _short(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."


class StorageTarget(Protocol):
    """The path operations a download target must offer (``ObjectStoragePath`` has them)."""

    def __truediv__(self, name: str) -> StorageTarget: ...

    def open(self, mode: str) -> IO[bytes]: ...

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
    sniffed = image_type(first_chunk)
    if sniffed is None or sniffed not in EXTENSION_BY_CONTENT_TYPE:
        raise ResultRejectedError(
            f"the result at {url} has no content type and is not a known image"
        )
    return EXTENSION_BY_CONTENT_TYPE[sniffed], sniffed


class ResultDownloader:
    """Copies result images into a storage folder.

    :param max_bytes: per-image cap, on the wire and once decoded, enforced while streaming.
    :param attempts: tries per image on transient errors (5xx, resets, timeouts).
    :param transport: replaces the network layer (tests): the checks before sending still
        apply, the connection-time address check and the time bound of each step do not.
    :param timeout: seconds any single network step may wait (connecting: at most 10).
    :param download_timeout: seconds one attempt may take in all: connecting, every redirect
        and the whole body (:data:`DEFAULT_DOWNLOAD_TIMEOUT`).
    :param allow_private_hosts: whether result URLs (and redirects) may reach loopback and
        private addresses. Pass :func:`private_hosts_allowed` of the API base URL: true only
        when the API itself is private. Link-local, multicast and reserved addresses are
        refused either way. Defaults to false: only public hosts.
    :param resolve: host name to addresses, for the checks before sending and at connection.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        attempts: int = DOWNLOAD_ATTEMPTS,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = DEFAULT_READ_TIMEOUT,
        download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
        allow_private_hosts: bool = False,
        resolve: Resolver = resolve_host,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        if not (download_timeout > 0 and math.isfinite(download_timeout)):
            raise ValueError(f"download_timeout must be > 0 seconds, got {download_timeout}")
        self.max_bytes = max_bytes
        self.attempts = max(1, attempts)
        self.download_timeout = download_timeout
        # 2 s, 4 s, ... (jittered down to half), the client's backoff with a longer first step.
        self._retry = RetryPolicy(max_attempts=self.attempts, backoff_initial=2.0, backoff_max=30.0)
        self._rng = random.Random()
        self.allow_private_hosts = allow_private_hosts
        self._resolve = resolve
        self._sleep = sleep
        if transport is None:
            transport = BoundedTransport(
                ssl_context=shared_ssl_context(),
                max_connections=DOWNLOAD_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY,
                addresses=self._connectable_addresses,
            )
        # No auth header: result URLs are public links, and the key must not travel to them.
        # Each request, redirects included, is checked before it leaves and when it connects.
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
            headers={"Accept-Encoding": ACCEPT_ENCODING},
            event_hooks={"request": [self._check_request]},
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def _refusal(self, host: str, address: str) -> str | None:
        """Why ``address`` (one of ``host``'s) may not be fetched from, or ``None``."""
        kind = address_kind(address)
        if kind == "public" or (kind == "private" and self.allow_private_hosts):
            return None
        what = (
            "a link-local, multicast or reserved address (never allowed)"
            if kind == "forbidden"
            else "a loopback or private address, and the API is public"
        )
        return f"its host {host[:100]!r} is {address}, {what}"

    def _addresses(self, host: str) -> list[str]:
        """Every address ``host`` stands for: itself if it is one, else what it resolves to."""
        literal = _literal_address(host)
        return [str(literal)] if literal is not None else list(self._resolve(host))

    def check_url(self, url: str) -> None:
        """Raise :class:`ResultRejectedError` unless ``url`` may be fetched (no I/O but DNS).

        Every address the host resolves to must be allowed.
        """
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            host = None
        if host is None or parts.scheme not in ("http", "https"):
            raise ResultRejectedError(
                f"refusing to download {_short(url)!r}: only absolute http(s) URLs are allowed"
            )
        try:
            addresses = self._addresses(host)
        except (OSError, UnicodeError) as exc:
            raise TransportError(f"cannot resolve the host of {_short(url)}: {exc}") from None
        if not addresses:
            raise TransportError(f"the host of {_short(url)} resolves to no address")
        for address in addresses:
            if (why := self._refusal(host, address)) is not None:
                raise ResultRejectedError(f"refusing to download {_short(url)}: {why}")

    def _connectable_addresses(self, host: str) -> list[str]:
        """``host``'s addresses for a connection, every one checked (the network backend's)."""
        try:
            addresses = self._addresses(host)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host[:100]!r}: {exc}") from None
        for address in addresses:
            if (why := self._refusal(host, address)) is not None:
                raise ResultRejectedError(f"refusing to connect for a download: {why}")
        return addresses

    def _check_request(self, request: httpx.Request) -> None:
        self.check_url(str(request.url))

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
        attempts = Attempts(self._retry, self._rng, idempotent=True)
        while True:
            try:
                return self._download_once(url, folder, stem)
            except FluxError as error:
                self._sleep(attempts.delay_after(error))

    def _download_once(self, url: str, folder: StorageTarget, stem: str) -> StoredImage:
        try:
            with request_deadline(self.download_timeout) as deadline:
                response = self._open(url)
                try:
                    self._check_status(response, url)
                    self._check_declared_size(response, url)
                    chunks = self._body(response, url, deadline)
                    first = _first_bytes(chunks)
                    extension, content_type = _extension(
                        response.headers.get("content-type"), first, url
                    )
                    final = folder / f"{stem}{extension}"
                    size, digest = self._write_atomically(
                        final, folder, _prepend(first, chunks), url
                    )
                finally:
                    response.close()
        except httpx.TimeoutException as exc:
            raise RequestTimeoutError(
                f"downloading {url} failed: {type(exc).__name__}: {exc}"
            ) from None
        except httpx.TransportError as exc:
            raise TransportError(f"downloading {url} failed: {type(exc).__name__}: {exc}") from None
        except httpx.InvalidURL as exc:
            raise ResultRejectedError(f"refusing to download {_short(url)!r}: {exc}") from None
        return StoredImage(str(final), size, digest, content_type, url)

    def _body(self, response: httpx.Response, url: str, deadline: Deadline) -> Iterator[bytes]:
        """The decoded body in bounded pieces, within the size cap and the attempt's deadline."""
        try:
            for piece in decoded_body(response, self.max_bytes):
                if deadline.expired():  # a slow sink, or a transport without the bound
                    raise RequestTimeoutError(
                        f"downloading {url} failed: not done within "
                        f"{seconds_text(self.download_timeout)} (download_timeout)"
                    )
                yield piece
        except BodyTooLargeError as error:
            raise ResultRejectedError(
                f"the result at {url} is over the {bytes_text(self.max_bytes)} cap ({error.where})"
            ) from None
        except BodyError as error:
            cls = TransportError if error.retryable else ResultRejectedError
            raise cls(f"the result at {url} {error.reason}") from None

    def _open(self, url: str) -> httpx.Response:
        """The streamed answer to ``GET url``, redirects followed by hand.

        The request hook checks every hop before it is sent; a redirect's own
        body is never read (httpx would read it whole), only closed.
        """
        request = self._http.build_request("GET", url)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._http.send(request, stream=True)
            if response.next_request is None:
                return response
            request = response.next_request
            response.close()
        raise ResultRejectedError(
            f"refusing to download {_short(url)}: more than {MAX_REDIRECTS} redirects"
        )

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

    def _check_declared_size(self, response: httpx.Response, url: str) -> None:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ResultRejectedError(
                f"the result at {_short(url)} declares {bytes_text(int(declared))}, "
                f"over the {bytes_text(self.max_bytes)} cap"
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
                    digest.update(chunk)
                    sink.write(chunk)
            _move_into_place(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()


def local_path(target: object) -> str | None:
    """The local file system path of ``target``, or ``None`` if it is not on local storage."""
    protocol = getattr(target, "protocol", None)
    if protocol is not None:
        # ObjectStoragePath (a PurePath too on Airflow 3.1, whose fspath is the whole URL).
        path = getattr(target, "path", None)
        return path if protocol in _LOCAL_PROTOCOLS and isinstance(path, str) else None
    if isinstance(target, PurePath):
        return os.fspath(target)
    return None


def _move_into_place(partial: StorageTarget, final: StorageTarget) -> None:
    """Rename ``partial`` to ``final``.

    On local storage a symlink at ``final`` is replaced, never followed (fsspec's local
    rename is ``shutil.move``, which moves into a directory a link points at), and a
    directory there is refused. Object stores have keys, not links: they keep their rename.
    """
    source, target = local_path(partial), local_path(final)
    if source is None or target is None:
        partial.rename(final)
        return
    try:
        os.replace(source, target)
    except IsADirectoryError:
        raise FluxError(
            f"cannot store the image as {final}: that name is a directory; remove it or "
            "download somewhere else",
            retryable=False,
        ) from None


def _first_bytes(chunks: Iterator[bytes]) -> bytes:
    """At least :data:`SNIFF_BYTES` of the body from ``chunks`` (less only if it is shorter)."""
    first = b""
    for chunk in chunks:
        first += chunk
        if len(first) >= SNIFF_BYTES:
            break
    return first


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
