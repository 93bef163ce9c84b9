"""``flux_provider.api.decoding``: one layer of gzip or deflate, decoded in bounded steps."""

from __future__ import annotations

import gzip
import zlib

import pytest

from flux_provider.api.decoding import (
    ACCEPT_ENCODING,
    DECODE_STEP,
    BodyCorruptError,
    BodyTooLargeError,
    BoundedBody,
    EncodingRefusedError,
    decoder_for,
)

TEXT = b'{"code": 200, "message": "success", "data": {"balance": 42}}' * 50
MIB = 1 << 20


def _deflate(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


def _zeros_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzipped (about a thousandth of that on the wire)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    parts = [compressor.compress(block) for _ in range(size // MIB)]
    return b"".join(parts) + compressor.flush()


def _decode_all(encoding: str | None, chunks: list[bytes], limit: int = 16 * MIB) -> bytes:
    body = BoundedBody(encoding, limit)
    out = b"".join(piece for chunk in chunks for piece in body.feed(chunk))
    body.finish()
    return out


ENCODED = {
    "gzip": gzip.compress(TEXT),
    "x-gzip": gzip.compress(TEXT),
    "GZip": gzip.compress(TEXT),
    "deflate": _deflate(TEXT, zlib.MAX_WBITS),
    "raw deflate": _deflate(TEXT, -zlib.MAX_WBITS),
}


def test_only_gzip_and_deflate_are_advertised() -> None:
    assert ACCEPT_ENCODING == "gzip, deflate"


@pytest.mark.parametrize("label", list(ENCODED))
def test_one_layer_decodes_whole_and_byte_by_byte(label: str) -> None:
    encoding = "deflate" if label == "raw deflate" else label
    data = ENCODED[label]
    assert _decode_all(encoding, [data]) == TEXT
    assert _decode_all(encoding, [data[i : i + 1] for i in range(len(data))]) == TEXT


@pytest.mark.parametrize("encoding", [None, "", "identity", " Identity ", "identity, identity"])
def test_no_encoding_passes_bytes_through(encoding: str | None) -> None:
    assert _decode_all(encoding, [TEXT[:10], TEXT[10:]]) == TEXT


@pytest.mark.parametrize(
    "encoding",
    ["gzip, gzip", "gzip,deflate", "deflate, gzip", "x-gzip, gzip", "gzip, identity, gzip"],
)
def test_stacked_encodings_are_refused(encoding: str) -> None:
    with pytest.raises(EncodingRefusedError, match="more than once") as info:
        decoder_for(encoding)
    assert not info.value.retryable
    assert "Content-Encoding" in info.value.reason


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-compress", "snappy", "gzip;q=1"])
def test_encodings_never_asked_for_are_refused(encoding: str) -> None:
    with pytest.raises(EncodingRefusedError, match="not asked for") as info:
        decoder_for(encoding)
    assert not info.value.retryable


def test_a_gzip_identity_pair_is_one_layer() -> None:
    assert _decode_all("identity, gzip", [ENCODED["gzip"]]) == TEXT


def test_no_step_of_a_bomb_produces_more_than_a_step() -> None:
    bomb = _zeros_bomb(64 * MIB)
    decoder = decoder_for("gzip")
    sizes = [len(piece) for piece in decoder.decode(bomb)]
    assert max(sizes) == DECODE_STEP
    assert sum(sizes) == 64 * MIB
    decoder.finish()


def test_a_bomb_is_refused_once_decoded_past_the_limit() -> None:
    body = BoundedBody("gzip", MIB)
    produced: list[int] = []

    def consume() -> None:
        for piece in body.feed(_zeros_bomb(512 * MIB)):
            produced.append(len(piece))

    with pytest.raises(BodyTooLargeError, match="once decoded") as info:
        consume()
    assert sum(produced) <= MIB
    assert body.decoded_bytes <= MIB + DECODE_STEP
    assert not info.value.retryable
    assert info.value.limit == MIB


def test_the_wire_is_counted_before_decoding() -> None:
    body = BoundedBody("identity", 100)
    list(body.feed(b"x" * 100))
    with pytest.raises(BodyTooLargeError, match="on the wire"):
        list(body.feed(b"x"))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_truncated_stream_is_corrupt_and_retryable(encoding: str) -> None:
    data = ENCODED[encoding]
    with pytest.raises(BodyCorruptError, match="ends before") as info:
        _decode_all(encoding, [data[: len(data) // 2]])
    assert info.value.retryable


def test_garbage_labelled_gzip_is_corrupt() -> None:
    with pytest.raises(BodyCorruptError, match="corrupt"):
        _decode_all("gzip", [b"this is not gzip at all"])


@pytest.mark.parametrize("split", [False, True])
def test_data_after_the_end_of_the_stream_is_refused(split: bool) -> None:
    data = ENCODED["gzip"]
    chunks = [data, b"trailing"] if split else [data + b"trailing"]
    with pytest.raises(BodyCorruptError, match="more data follows"):
        _decode_all("gzip", chunks)


def test_an_empty_body_labelled_gzip_is_empty() -> None:
    assert _decode_all("gzip", []) == b""
