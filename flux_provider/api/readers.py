"""Tolerant readers of decoded JSON values, free of any field name of the wire.

:mod:`flux_provider.api.wire` uses them to read what the API does not publish a
schema for: numbers that may be strings, times in seconds, milliseconds or ISO
8601, JSON encoded inside strings, and the key scrubbed from every string.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

_MS_THRESHOLD = 1e11
"""Epoch values above this are milliseconds (1e11 s is the year 5138)."""

MIN_SCRUBBED_KEY_CHARS = 5
"""Shorter keys are not scrubbed from answers: like Airflow's masker, they would mangle text."""


def scrub(payload: Any, secret: str) -> Any:
    """``payload`` (decoded JSON) with ``secret`` replaced in every string and object key.

    Iterative, so a deeply nested answer cannot exhaust the stack.
    """
    if len(secret) < MIN_SCRUBBED_KEY_CHARS:
        return payload
    if isinstance(payload, str):
        return payload.replace(secret, "***")
    stack = [payload]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for slot, value in list(items):
            if isinstance(slot, str) and secret in slot:
                del node[slot]
                slot = slot.replace(secret, "***")
            if isinstance(value, str) and secret in value:
                value = value.replace(secret, "***")
            elif isinstance(value, (dict, list)):
                stack.append(value)
            node[slot] = value
    return payload


def finite_number(value: Any, *, signed: bool = False) -> float | None:
    """A finite number (>= 0 unless ``signed``) from a number or numeric string, else ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(number) or (number < 0 and not signed):
        return None
    return number


def epoch_seconds(value: Any) -> float | None:
    """Epoch seconds from seconds, milliseconds (told by size) or an ISO 8601 string."""
    number = finite_number(value)
    if number is not None:
        return None if number == 0 else number / 1000 if number > _MS_THRESHOLD else number
    if isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment.timestamp() if moment.tzinfo is not None else None
    return None


def decoded_json(value: Any) -> Any:
    """A JSON string's content (an object, a list or a quoted string); anything else unchanged."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "[", '"'):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def is_http_url(text: str) -> bool:
    """Whether ``text`` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)
