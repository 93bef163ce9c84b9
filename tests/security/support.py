"""Shared pieces of the security tests: the key, a task context, running a trigger to its end."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from flux_provider.triggers import FluxTaskTrigger

KEY = f"sk-flux-SECURITY-{secrets.token_hex(12)}"
"""A distinctive key: any occurrence of it outside the request header is a leak."""

HOSTILE_CONN_ID = "flux_hostile"
TRIGGER_TIMEOUT = 60.0


class FakeTI:
    """The part of a task instance the operator touches."""

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        """Keep the value."""
        self.xcoms[key] = value


def task_context() -> dict[str, Any]:
    """A minimal execution context for calling an operator's ``execute`` directly."""
    return {"ti": FakeTI()}


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
