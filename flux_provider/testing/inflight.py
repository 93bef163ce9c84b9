"""The account's tasks in flight: the service's limit on them and the most seen at once."""

from __future__ import annotations

import heapq
import math

from .tasks import TaskRecord

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "InFlight",
    "InFlightLimitError",
    "checked_limit",
    "checked_retry_after",
]

DEFAULT_RETRY_AFTER = 1.0
"""Seconds a create refused for the in-flight limit is told to wait, unless configured."""


class InFlightLimitError(Exception):
    """The account already has its limit of tasks in flight (the API answers 429)."""

    def __init__(self, limit: int, retry_after: float) -> None:
        """Refuse a create at ``limit`` tasks in flight, asking to retry in ``retry_after`` s."""
        super().__init__(f"too many tasks in flight: at most {limit} at once")
        self.limit = limit
        self.retry_after = retry_after


def checked_limit(limit: int | None) -> int | None:
    """``limit`` if it is ``None`` or a whole number >= 1.

    Raises:
        ValueError: Otherwise.
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"max_in_flight must be a whole number >= 1 or None, got {limit!r}")
    return limit


def checked_retry_after(seconds: float) -> float:
    """``seconds`` as a float, if it is a finite number >= 0.

    Raises:
        ValueError: Otherwise.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"rate_limit_retry_after must be a finite number of seconds >= 0, got {seconds}"
        )
    return float(seconds)


class InFlight:
    """The tasks created through the API that have not ended, with an optional limit.

    A task ends on the server's clock (its ``duration`` passes) or when :meth:`forget` is told
    it was ended early. Tasks wait in a heap ordered by when they end on their own, so counting
    costs a pop per ended task, not a pass over every task. Not thread-safe on its own: the
    server's lock guards it, which makes checking the limit and adding a task one step.
    """

    def __init__(self, *, limit: int | None, retry_after: float) -> None:
        """Track no task yet; refuse creates beyond ``limit`` (``None``: no limit)."""
        self.limit = checked_limit(limit)
        self.retry_after = checked_retry_after(retry_after)
        self._ends: list[tuple[float, int, TaskRecord]] = []
        self._live: set[str] = set()
        self._added = 0  # breaks ties in the heap between tasks ending at the same time

    def count(self, now: float) -> int:
        """Tasks in flight at clock time ``now``."""
        while self._ends:
            _, _, record = self._ends[0]
            if record.flux_task_id in self._live and record.terminal(now) is None:
                break
            heapq.heappop(self._ends)
            self._live.discard(record.flux_task_id)
        return len(self._live)

    def admit(self, now: float) -> None:
        """Allow one more task at ``now``.

        Raises:
            InFlightLimitError: If the limit is reached.
        """
        if self.limit is not None and self.count(now) >= self.limit:
            raise InFlightLimitError(self.limit, self.retry_after)

    def add(self, record: TaskRecord, now: float) -> int:
        """Track a task just created; the tasks in flight, the new one included.

        The new task counts even when it ended at once (a ``duration`` of 0): it was in flight
        the moment it was created.
        """
        in_flight = self.count(now) + 1
        self._added += 1
        heapq.heappush(self._ends, (record.started + record.duration, self._added, record))
        self._live.add(record.flux_task_id)
        return in_flight

    def forget(self, flux_task_id: str) -> None:
        """The task was ended before its time (its heap entry goes when it comes to the top)."""
        self._live.discard(flux_task_id)
