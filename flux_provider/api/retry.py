"""How one call is retried: backoff with jitter, ``Retry-After``, and when a resend is safe.

Shared by the API clients and the result downloads; no Airflow imports.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

from flux_provider.api.errors import (
    ConnectionFailedError,
    FluxError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
)

RETRY_AFTER_MAX = 120.0
"""The longest ``Retry-After`` honoured; a longer one is waited for this long, then retried."""


@dataclass(frozen=True)
class RetryPolicy:
    """How one API call is retried: ``max_attempts`` in all, exponential backoff with jitter."""

    max_attempts: int = 4
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    retry_after_max: float = RETRY_AFTER_MAX

    def delay(self, attempt: int, error: FluxError, rng: random.Random) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): the server's ``Retry-After`` wins."""
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.retry_after_max)
        ceiling = min(self.backoff_max, math.ldexp(self.backoff_initial, attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or HTTP date); ``None`` if unusable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (ValueError, TypeError, OverflowError, IndexError):
            return None  # A garbled header must not turn an API error into a crash.
    return max(seconds, 0.0) if math.isfinite(seconds) else None


_REJECTED_BEFORE_CREATING = (
    RateLimitedError,
    ServiceUnavailableError,
    ServerError,
    ConnectionFailedError,
)


def may_resend(error: FluxError, idempotent: bool) -> bool:
    """Whether the client itself may send the request again.

    GETs are resent on any retryable error. A create is resent only when the
    server refused it outright or the request never left: a timeout or a reset
    after sending may have created a task, and a blind resend could pay twice.
    """
    if not error.retryable:
        return False
    return idempotent or isinstance(error, _REJECTED_BEFORE_CREATING)


@dataclass
class Attempts:
    """The retry bookkeeping of one call or download, shared by every retrying loop."""

    policy: RetryPolicy
    rng: random.Random
    idempotent: bool
    attempt: int = 0

    def delay_after(self, error: FluxError) -> float:
        """Back-off before the next attempt; re-raises ``error`` when none is allowed."""
        self.attempt += 1
        if self.attempt >= self.policy.max_attempts or not may_resend(error, self.idempotent):
            raise error
        return self.policy.delay(self.attempt, error, self.rng)
