"""Numbers in messages read as people write them (no ``1e+06``)."""

from __future__ import annotations

import pytest

from flux_provider.api.formatting import bytes_text, count_text, credits_text, seconds_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e6, "1,000,000"),
        (1_000_000, "1,000,000"),
        (6.5, "6.5"),
        (6.0, "6"),
        (0, "0"),
        (0.125, "0.125"),
        (1234.5678, "1,234.568"),
        (-3, "-3"),
        (1e21, "1,000,000,000,000,000,000,000"),
        (float("inf"), "inf"),
    ],
)
def test_credits(value: float, text: str) -> None:
    assert credits_text(value) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (200, "200 bytes"),
        (1023, "1,023 bytes"),
        (1024, "1 KiB"),
        (18_089, "17.7 KiB"),
        (1 << 20, "1 MiB"),
        (50 << 20, "50 MiB"),
        (3 << 29, "1.5 GiB"),
        (5 << 50, "5,120 TiB"),
    ],
)
def test_bytes(size: int, text: str) -> None:
    assert bytes_text(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "0 s"),
        (0.4, "0.4 s"),
        (12.34, "12.3 s"),
        (59.94, "59.9 s"),
        (125, "2 min 5 s"),
        (3599.6, "1 h 0 min"),
        (3600, "1 h 0 min"),
        (96_000, "26 h 40 min"),
    ],
)
def test_seconds(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 polls"), (1, "1 poll"), (2, "2 polls"), (1000, "1,000 polls")]
)
def test_counts(count: int, text: str) -> None:
    assert count_text(count, "poll") == text
