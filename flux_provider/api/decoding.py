"""Answer bodies read within a byte limit, on the wire and once decoded (no Airflow imports).

httpx inflates each network read whole, so a few hundred compressed bytes can become
gigabytes before any cap sees them. Bodies are therefore read raw and decoded here, step by
step: no step produces more than :data:`DECODE_STEP` bytes, and every decoded byte is counted
as it is produced. At most one layer of ``gzip`` (``x-gzip``) or ``deflate`` (zlib or raw) is
accepted, as that is all the requests advertise (:data:`ACCEPT_ENCODING`); stacked encodings,
``br``, ``zstd`` and anything else are refused before a byte of the body is read.

Callers turn the :class:`BodyError` raised here into their own error (an API answer or a
download), keeping its ``retryable`` verdict.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import httpx

from flux_provider.api.formatting import bytes_text

ACCEPT_ENCODING = "gzip, deflate"
"""What every request advertises: the only encodings :func:`decoder_for` accepts."""
DECODE_STEP = 64 * 1024
"""The most one decompression step may produce."""

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS
_IDENTITY = frozenset({"", "identity"})
_ZLIB_HEADER_BYTES = 2


class BodyError(Exception):
    """A body that cannot be read within its bounds; ``retryable`` if another try may do."""

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodingRefusedError(BodyError):
    """The ``Content-Encoding`` is stacked, never advertised or unknown."""


class BodyTooLargeError(BodyError):
    """The body is over the limit ``where`` (``on the wire`` or ``once decoded``)."""

    def __init__(self, limit: int, where: str) -> None:
        super().__init__(f"is over the {bytes_text(limit)} limit {where}")
        self.limit = limit
        self.where = where


class BodyCorruptError(BodyError):
    """The compressed data is corrupt, cut short, or followed by more data."""

    retryable = True


class Decoder(Protocol):
    """Turns raw body bytes into decoded ones, in bounded steps."""

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in pieces of at most :data:`DECODE_STEP`."""
        ...

    def finish(self) -> None:
        """Check that the body ended where its encoding says it ends."""
        ...


class _Identity:
    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def finish(self) -> None:
        return None


class _Zlib:
    """One layer of gzip or deflate; deflate is zlib-wrapped or raw, told by its first bytes."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        gzip = encoding in ("gzip", "x-gzip")
        self._inflater: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS) if gzip else None
        self._head = b""
        self._fed = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        self._fed = self._fed or bool(data)
        inflater = self._inflater or self._start_deflate(data)
        if inflater is None:
            return
        pending, self._head = self._head or data, b""
        if inflater.eof and pending:
            raise self._trailing()
        while True:
            try:
                piece = inflater.decompress(pending, DECODE_STEP)
            except zlib.error as exc:
                raise BodyCorruptError(f"its {self._encoding} data is corrupt ({exc})") from None
            if piece:
                yield piece
            if inflater.eof:
                if inflater.unused_data:
                    raise self._trailing()
                return
            pending = inflater.unconsumed_tail
            # A full step may leave output inside the inflater even with no input left.
            if not pending and len(piece) < DECODE_STEP:
                return

    def _start_deflate(self, data: bytes) -> zlib._Decompress | None:
        """The inflater for ``deflate`` once its first two bytes are in (zlib or raw)."""
        self._head += data
        if len(self._head) < _ZLIB_HEADER_BYTES:
            return None
        wbits = _ZLIB_WBITS if _zlib_header(self._head) else _RAW_DEFLATE_WBITS
        self._inflater = zlib.decompressobj(wbits)
        return self._inflater

    def _trailing(self) -> BodyCorruptError:
        return BodyCorruptError(f"more data follows the end of its {self._encoding} stream")

    def finish(self) -> None:
        if not self._fed:
            return  # an empty body: nothing was compressed
        if self._inflater is None or not self._inflater.eof:
            raise BodyCorruptError(
                f"its {self._encoding} data ends before the compressed stream does"
            )


def _zlib_header(head: bytes) -> bool:
    """Whether ``head`` starts with a zlib header (deflate method, a valid check value)."""
    return head[0] & 0x0F == zlib.DEFLATED and (head[0] << 8 | head[1]) % 31 == 0


def decoder_for(content_encoding: str | None) -> Decoder:
    """The decoder of a body served with ``content_encoding``.

    Raises:
        EncodingRefusedError: the encoding is stacked (``gzip, gzip``), never advertised
            (``br``, ``zstd``) or unknown.
    """
    layers = [
        token.strip().lower()
        for token in (content_encoding or "").split(",")
        if token.strip().lower() not in _IDENTITY
    ]
    if not layers:
        return _Identity()
    label = f"(Content-Encoding: {(content_encoding or '')[:100]})"
    if len(layers) > 1:
        raise EncodingRefusedError(
            f"is compressed more than once {label}: one layer of gzip or deflate is accepted"
        )
    (layer,) = layers
    if layer not in ("gzip", "x-gzip", "deflate"):
        raise EncodingRefusedError(
            f"is compressed with {layer[:40]!r} {label}, which was not asked for: "
            "only gzip or deflate is accepted"
        )
    return _Zlib(layer)


class BoundedBody:
    """Counts a body's bytes on the wire and decoded, refusing either past ``limit``.

    Feed it the raw chunks as they arrive (:meth:`feed`), then call :meth:`finish`.
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        self._decoder = decoder_for(content_encoding)
        self.limit = limit
        self.wire_bytes = 0
        self.decoded_bytes = 0

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``raw``, counted as they are produced."""
        self.wire_bytes += len(raw)
        if self.wire_bytes > self.limit:
            raise BodyTooLargeError(self.limit, "on the wire")
        for piece in self._decoder.decode(raw):
            self.decoded_bytes += len(piece)
            if self.decoded_bytes > self.limit:
                raise BodyTooLargeError(self.limit, "once decoded")
            yield piece

    def finish(self) -> None:
        """Check that the body ended where its encoding says it ends."""
        self._decoder.finish()


def decoded_body(response: httpx.Response, limit: int) -> Iterator[bytes]:
    """``response``'s body, read raw and decoded in bounded pieces, refused past ``limit``.

    Raises:
        BodyError: the body is refused (see its subclasses).
    """
    if response.is_stream_consumed:
        yield _in_memory(response, limit)
        return
    body = BoundedBody(response.headers.get("content-encoding"), limit)
    for raw in response.iter_raw():
        yield from body.feed(raw)
    body.finish()


async def adecoded_body(response: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The async twin of :func:`decoded_body`."""
    if response.is_stream_consumed:
        yield _in_memory(response, limit)
        return
    body = BoundedBody(response.headers.get("content-encoding"), limit)
    async for raw in response.aiter_raw():
        for piece in body.feed(raw):
            yield piece
    body.finish()


def _in_memory(response: httpx.Response, limit: int) -> bytes:
    """The body of an answer built in memory (a mock transport), never read from a network."""
    if len(response.content) > limit:
        raise BodyTooLargeError(limit, "once decoded")
    return response.content
