"""Compression bombs and a peak-memory probe for the security tests (stdlib only).

Each bomb is built by streaming zeros through ``zlib`` (the decoded bytes never exist in
memory here) and cached for the session: a few seconds of CPU once.
"""

from __future__ import annotations

import functools
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MIB = 1 << 20
GZIP_WBITS = 16 + zlib.MAX_WBITS
ZLIB_WBITS = zlib.MAX_WBITS
RAW_DEFLATE_WBITS = -zlib.MAX_WBITS
ZEROS = bytes(MIB)


def _compressed(chunks: Iterator[bytes], wbits: int) -> Iterator[bytes]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


def _zeros(size: int) -> Iterator[bytes]:
    for _ in range(size // MIB):
        yield ZEROS


@functools.cache
def single_layer(decoded: int, wbits: int) -> bytes:
    """``decoded`` zero bytes compressed once (gzip, zlib or raw deflate, as ``wbits`` says)."""
    return b"".join(_compressed(_zeros(decoded), wbits))


@functools.cache
def gzip_in_gzip(decoded: int) -> bytes:
    """``decoded`` zero bytes gzipped, then gzipped again: under a kilobyte on the wire."""
    return b"".join(_compressed(_compressed(_zeros(decoded), GZIP_WBITS), GZIP_WBITS))


@dataclass(frozen=True)
class Bomb:
    """A body and the ``Content-Encoding`` it is served with."""

    id: str
    body: bytes
    encoding: str
    refused_by_label: bool
    """Whether the label alone refuses it (stacked or never advertised)."""

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """The answer's extra headers."""
        return (("Content-Encoding", self.encoding),)


def bombs() -> list[Bomb]:
    """gzip-in-gzip (1 GiB), gzip, zlib deflate and raw deflate (512 MiB) and brotli-labelled."""
    gzip_512 = single_layer(512 * MIB, GZIP_WBITS)
    return [
        Bomb("gzip-in-gzip", gzip_in_gzip(1024 * MIB), "gzip, gzip", refused_by_label=True),
        Bomb("gzip", gzip_512, "gzip", refused_by_label=False),
        Bomb("deflate", single_layer(512 * MIB, ZLIB_WBITS), "deflate", refused_by_label=False),
        Bomb(
            "raw-deflate",
            single_layer(512 * MIB, RAW_DEFLATE_WBITS),
            "deflate",
            refused_by_label=False,
        ),
        Bomb("brotli-labelled", gzip_512, "br", refused_by_label=True),
    ]


BOMB_IDS = ["gzip-in-gzip", "gzip", "deflate", "raw-deflate", "brotli-labelled"]


def bomb(bomb_id: str) -> Bomb:
    """The bomb called ``bomb_id`` (one of :data:`BOMB_IDS`)."""
    (found,) = [candidate for candidate in bombs() if candidate.id == bomb_id]
    return found


@dataclass
class Peak:
    """The most memory Python allocated inside a :func:`peak_memory` block, over its start."""

    bytes: int = 0


@contextmanager
def peak_memory() -> Iterator[Peak]:
    """Measure the peak of ``tracemalloc``'s traced memory over the block (every thread)."""
    peak = Peak()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        yield peak
        _, highest = tracemalloc.get_traced_memory()
        peak.bytes = highest - start
    finally:
        tracemalloc.stop()
