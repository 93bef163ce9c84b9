"""Numbers as people read them in messages: credits, byte sizes and durations.

``f"{1e6:g}"`` prints ``1e+06``; a Test button, a task log or an error that says so makes the
reader do arithmetic. Every user-facing message that shows a number of credits, bytes or
seconds goes through these. No Airflow import: the API layer uses them too.
"""

from __future__ import annotations

import math

__all__ = ["bytes_text", "count_text", "credits_text", "seconds_text"]

_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB")


def credits_text(value: float) -> str:
    """Credits with thousands separators and at most three decimals.

    ``1e6`` → ``1,000,000``; ``6.5`` → ``6.5``; ``1234.5678`` → ``1,234.568``.
    """
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def count_text(count: int, noun: str) -> str:
    """``1 poll``, ``2 polls``, ``1,000 images``: a count and its noun, plural when it is not 1."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def bytes_text(size: int) -> str:
    """A byte count in binary units: ``512 bytes``, ``17.7 KiB``, ``50 MiB``, ``1.5 GiB``."""
    if size < 1024:
        return count_text(size, "byte")
    scaled = float(size)
    for unit in _BYTE_UNITS:
        scaled /= 1024
        if scaled < 1024 or unit == _BYTE_UNITS[-1]:
            break
    text = f"{scaled:,.1f}".removesuffix(".0")
    return f"{text} {unit}"


def seconds_text(seconds: float) -> str:
    """A duration: ``0.4 s``, ``12.3 s``, ``2 min 5 s``, ``1 h 0 min``, ``26 h 40 min``."""
    if not math.isfinite(seconds):
        return f"{seconds} s"
    if seconds < 60:
        return f"{seconds:.1f}".removesuffix(".0") + " s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s"
    hours, rest = divmod(whole, 3600)
    return f"{hours:,} h {rest // 60} min"
