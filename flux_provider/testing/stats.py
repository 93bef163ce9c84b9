"""Request records and counters kept by the fake API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["REDACTED", "FakeStats", "RecordedRequest"]

REDACTED = "***"
"""Replaces API-key header values in :attr:`RecordedRequest.headers`."""


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the fake API received it.

    Attributes:
        method: HTTP method, e.g. ``"POST"``.
        path: URL path without the query string.
        query: Query parameters (the last value wins when a name repeats).
        headers: Request headers with lower-cased names; ``authorization`` and the server's
            API-key header carry :data:`REDACTED` instead of their value.
        body: Raw request body (empty for requests without one).
        received_at: ``time.monotonic()`` when the request was read.
        client_port: The client's source port: requests sharing one tell a reused connection.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    received_at: float
    client_port: int = 0


@dataclass
class FakeStats:
    """Counters of what the fake API has seen since it started or since ``reset_stats()``.

    :attr:`FakeFluxServer.stats` returns a copy, so reading it is safe while requests arrive.

    Attributes:
        create_requests: Every POST to ``CreateTask``, including faulted and rejected ones.
        tasks_created: Tasks created by successful ``CreateTask`` requests (``submit()`` is
            not counted).
        poll_requests: Every GET of ``TaskInfo``, including faulted and rejected ones.
        balance_requests: Every GET of the account balance, including faulted and rejected ones.
        estimate_requests: Every POST to ``estimate-credits``, including faulted and rejected
            ones (none while the endpoint is switched off: it is then an unknown route).
        image_requests: Every GET of a result file, including faulted and missing ones.
        callbacks_sent: Callback POSTs attempted to loopback ``callback_url`` addresses.
        rate_limited_creates: ``CreateTask`` requests answered 429 because the account had
            ``max_in_flight`` tasks in flight (faults not included).
        peak_in_flight: The most tasks created through the API and not ended at once, as seen
            at each creation (the new task included); after ``reset_stats()`` it starts from
            the tasks then in flight.
        requests: Every request received, in arrival order, including unknown routes.
    """

    create_requests: int = 0
    tasks_created: int = 0
    poll_requests: int = 0
    balance_requests: int = 0
    estimate_requests: int = 0
    image_requests: int = 0
    callbacks_sent: int = 0
    rate_limited_creates: int = 0
    peak_in_flight: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        """Every counter by name (the request log left out), e.g. for a JSON report."""
        return {
            "create_requests": self.create_requests,
            "tasks_created": self.tasks_created,
            "poll_requests": self.poll_requests,
            "balance_requests": self.balance_requests,
            "estimate_requests": self.estimate_requests,
            "image_requests": self.image_requests,
            "callbacks_sent": self.callbacks_sent,
            "rate_limited_creates": self.rate_limited_creates,
            "peak_in_flight": self.peak_in_flight,
        }
