"""Shared pieces of the security tests: the key, a key search, running a trigger to its end."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from flux_provider.triggers import FluxTaskTrigger

KEY = f"sk-flux-SECURITY-{secrets.token_hex(12)}"
"""A distinctive key: any occurrence of it outside the request header is a leak."""

HOSTILE_CONN_ID = "flux_hostile"
_BASE64 = re.compile(rb"[A-Za-z0-9+/=_-]{24,}")


@dataclass
class KeySearch:
    """Where a key was looked for, and where it was found (itself or its random part).

    ``look`` also searches zlib-compressed data decompressed, and, with ``decode_base64``,
    every base64 run decoded (a Celery message carries its body so).
    """

    key: str
    decode_base64: bool = False
    places: int = 0
    found: list[str] = field(default_factory=list)

    @property
    def needles(self) -> tuple[str, str]:
        """The key and its random part (after the last ``-``)."""
        return self.key, self.key.rsplit("-", 1)[1]

    def occurrences(self, data: str | bytes) -> int:
        """How many times the key, or its random part alone, occurs in ``data``."""
        raw = data.encode() if isinstance(data, str) else data
        count = sum(raw.count(needle.encode()) for needle in self.needles)
        if raw[:2] in (b"\x78\x9c", b"\x78\x01", b"\x78\xda"):
            with contextlib.suppress(zlib.error):
                count += self.occurrences(zlib.decompress(raw))
        if self.decode_base64:
            for run in _BASE64.findall(raw):
                with contextlib.suppress(binascii.Error, ValueError):
                    decoded = base64.b64decode(run + b"=" * (-len(run) % 4), altchars=b"-_")
                    count += sum(decoded.count(needle.encode()) for needle in self.needles)
        return count

    def look(self, place: str, data: str | bytes) -> None:
        """Search ``data``; remember ``place`` if the key is in it."""
        self.places += 1
        count = self.occurrences(data)
        if count:
            self.found.append(f"{place}: {count}")


TRIGGER_TIMEOUT = 60.0


def trigger_for(flux_task_id: str, conn_id: str = HOSTILE_CONN_ID, **overrides: Any) -> Any:
    """A :class:`FluxTaskTrigger` with a short deadline and fast polls."""
    options: dict[str, Any] = {
        "deadline": time.time() + 30,
        "poll_interval": 0.01,
        "max_consecutive_errors": 1,
    }
    options.update(overrides)
    return FluxTaskTrigger(flux_task_id, conn_id, **options)


async def run_trigger(trigger: FluxTaskTrigger) -> list[dict[str, Any]]:
    """Every event the trigger yields until its generator ends (bounded by a timeout).

    An exception escaping ``run()`` is what would kill the trigger in the
    triggerer: it propagates and fails the test.
    """

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(collect(), TRIGGER_TIMEOUT)
