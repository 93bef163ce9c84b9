"""Scripted misbehaviours (:class:`Fault`) and the FIFO queue that hands them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from .wire import Endpoint, MessageKey, Reply, error_reply, format_seconds

__all__ = ["FAULT_ENDPOINTS", "MALFORMED_BODY", "Fault", "FaultEndpoint", "FaultQueue"]

FaultEndpoint = Literal["create", "poll", "balance", "estimate", "image", "any"]
"""A fault's target: one route (``poll`` is ``TaskInfo``), or ``"any"`` for all of them."""

FAULT_ENDPOINTS: tuple[FaultEndpoint, ...] = get_args(FaultEndpoint)
"""Allowed values of :attr:`Fault.endpoint`."""

MALFORMED_BODY = b'{"code": 200, "data": '
"""Body sent by a ``malformed`` fault: the truncated start of a JSON document."""


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour applied to the next ``times`` matching requests.

    Faults apply before the API key is checked, the way a gateway's 429 arrives before any
    authentication: a faulted request gets the fault's answer whatever key it carries.

    Attributes:
        endpoint: Route the fault targets: ``"create"``, ``"poll"`` (``TaskInfo``),
            ``"balance"``, ``"estimate"``, ``"image"`` (result files), or ``"any"`` for all.
        status: Answer with this HTTP status and the same body ``code`` (e.g. 429, 455, 500).
        body_code: Body ``code`` when it differs from the HTTP status; with ``status`` unset
            the HTTP status is 200 (e.g. HTTP 200 carrying ``{"code": 500}``).
        message: Text of the error envelope (its ``message``, or ``msg`` with that
            ``message_key``).
        retry_after: Seconds sent in a ``Retry-After`` header (needs ``status`` or
            ``body_code``). Whole values are sent as integers, others as decimal text.
        delay: Seconds to sleep before answering (or before dropping). A fault with only a
            delay answers normally afterwards.
        drop: Close the connection without any answer.
        malformed: Answer HTTP 200 with a JSON content type and a body that is not JSON.
        times: How many matching requests the fault applies to; ``None`` means every one
            until :meth:`FakeFluxServer.clear_faults` is called.
    """

    endpoint: FaultEndpoint
    status: int | None = None
    body_code: int | None = None
    message: str = "injected fault"
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    malformed: bool = False
    times: int | None = 1

    def __post_init__(self) -> None:
        """Reject contradictory or empty faults."""
        if self.endpoint not in FAULT_ENDPOINTS:
            raise ValueError(f"unknown fault endpoint {self.endpoint!r}")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status (100-599), got {self.status}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be at least 1 or None, got {self.times}")
        if self.delay < 0:
            raise ValueError(f"delay must not be negative, got {self.delay}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must not be negative, got {self.retry_after}")
        answers = self.status is not None or self.body_code is not None
        if self.drop and (answers or self.malformed or self.retry_after is not None):
            raise ValueError("a dropping fault sends no answer: only delay may accompany drop")
        if self.malformed and answers:
            raise ValueError("malformed answers HTTP 200: do not combine it with status/body_code")
        if self.retry_after is not None and not answers:
            raise ValueError("retry_after needs status or body_code")
        if not (answers or self.drop or self.malformed or self.delay > 0):
            raise ValueError("fault does nothing: set status, body_code, delay, drop or malformed")

    def matches(self, endpoint: Endpoint) -> bool:
        """Whether the fault targets requests to ``endpoint``."""
        return self.endpoint in ("any", endpoint)

    def reply(self, message_key: MessageKey = "message") -> Reply | None:
        """The answer replacing the normal one, or ``None`` (drop, or delay-only fault)."""
        if self.malformed:
            return Reply(status=200, body=MALFORMED_BODY)
        if self.status is None and self.body_code is None:
            return None
        status = self.status if self.status is not None else 200
        headers: tuple[tuple[str, str], ...] = ()
        if self.retry_after is not None:
            headers = (("Retry-After", format_seconds(self.retry_after)),)
        return error_reply(
            status, self.message, code=self.body_code, headers=headers, message_key=message_key
        )


@dataclass
class _Entry:
    fault: Fault
    remaining: int | None


class FaultQueue:
    """Faults in the order they were added, each with its remaining uses.

    Not thread-safe on its own: :class:`FakeFluxServer` calls it under its lock.
    """

    def __init__(self) -> None:
        """Create an empty queue."""
        self._entries: list[_Entry] = []

    def __len__(self) -> int:
        """Number of faults that still have uses left."""
        return len(self._entries)

    def add(self, fault: Fault) -> None:
        """Append ``fault`` behind the faults already queued."""
        self._entries.append(_Entry(fault, fault.times))

    def clear(self) -> None:
        """Drop every queued fault."""
        self._entries.clear()

    def take(self, endpoint: Endpoint) -> Fault | None:
        """Use up one application of the first fault matching ``endpoint``, if any."""
        for position, entry in enumerate(self._entries):
            if not entry.fault.matches(endpoint):
                continue
            if entry.remaining is not None:
                entry.remaining -= 1
                if entry.remaining == 0:
                    del self._entries[position]
            return entry.fault
        return None
