"""How to wait for a task: the polling schedule and the bookkeeping of one wait.

Pure logic with no I/O, shared by the sync client's ``wait_for_task`` and the
async trigger so both wait the same way: adaptive intervals (fast at first,
then backing off to a cap), ``Retry-After`` honoured, transient poll errors
absorbed up to a bound, a 404 right after creation tolerated briefly, and an
absolute wall-clock deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flux_provider.errors import FluxError, NotFoundError, TaskTimeoutError
from flux_provider.models import TaskInfo, TaskState

DEFAULT_MAX_CONSECUTIVE_ERRORS = 5
DEFAULT_NOT_FOUND_GRACE = 3
ERROR_BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class PollSchedule:
    """Seconds to wait before each poll: ``initial`` growing by ``factor`` up to ``maximum``.

    The default starts at 2 s (the API's documented advice) and settles at 5 s,
    so a 30 s generation costs about 8 polls and is noticed within 5 s.
    ``PollSchedule.fixed(10)`` polls at a constant interval.
    """

    initial: float = 2.0
    factor: float = 1.5
    maximum: float = 5.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum <= 0 or self.factor < 1:
            raise ValueError("poll intervals must be > 0 and the growth factor >= 1")

    @classmethod
    def fixed(cls, interval: float) -> PollSchedule:
        """A constant interval."""
        return cls(initial=interval, factor=1.0, maximum=interval)

    @classmethod
    def from_interval(cls, poll_interval: float | None) -> PollSchedule:
        """``None`` → the adaptive default; a number → a fixed interval."""
        return cls() if poll_interval is None else cls.fixed(poll_interval)

    def interval(self, polls_made: int) -> float:
        """The wait after ``polls_made`` polls."""
        growth: float = self.factor ** max(polls_made - 1, 0)
        return min(self.maximum, self.initial * growth)


@dataclass
class TaskWait:
    """The state of one wait for one task; drivers feed it poll outcomes.

    ``record_info`` returns the info once the task has ended; ``record_error``
    returns how long to back off, or raises once the error is hopeless or too
    many polls failed in a row; ``next_delay`` is the pause before the next
    poll, clamped to the deadline; ``check_deadline`` raises
    :class:`TaskTimeoutError` once it has passed.
    """

    flux_task_id: str
    deadline: float
    schedule: PollSchedule = field(default_factory=PollSchedule)
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    not_found_grace: int = DEFAULT_NOT_FOUND_GRACE
    clock: Callable[[], float] = time.time
    started: float = field(default=0.0)
    polls: int = 0
    errors_in_a_row: int = 0
    last_state: TaskState | None = None
    last_error: FluxError | None = None
    state_changed: bool = False
    """Whether the last successful poll saw a different state than the one before."""
    _retry_after: float | None = None

    def __post_init__(self) -> None:
        if not self.started:
            self.started = self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds since this wait began."""
        return self.clock() - self.started

    def record_info(self, info: TaskInfo) -> TaskInfo | None:
        """Count a successful poll; return the info if the task has ended."""
        self.polls += 1
        self.errors_in_a_row = 0
        self._retry_after = None
        self.state_changed = info.state is not self.last_state
        self.last_state = info.state
        return info if info.state.is_terminal else None

    def record_error(self, error: FluxError) -> float:
        """Count a failed poll; return the back-off, or raise when the wait must end."""
        self.polls += 1
        self.errors_in_a_row += 1
        self.last_error = error
        if isinstance(error, NotFoundError) and self.last_state is None:
            # Right after creation the task may not be visible yet.
            if self.errors_in_a_row > self.not_found_grace:
                raise error
        elif not error.retryable:
            raise error
        elif self.errors_in_a_row > self.max_consecutive_errors:
            error.message = (
                f"{error.message} ({self.errors_in_a_row} polls in a row failed; giving up)"
            )
            raise error
        self._retry_after = error.retry_after
        backoff = math.ldexp(self.schedule.interval(1), self.errors_in_a_row - 1)
        return min(max(backoff, error.retry_after or 0.0), ERROR_BACKOFF_MAX)

    def next_delay(self) -> float:
        """The pause before the next regular poll, never past the deadline."""
        delay = max(self.schedule.interval(self.polls), self._retry_after or 0.0)
        return self.clamp(delay)

    def clamp(self, delay: float) -> float:
        """Shorten ``delay`` so the wait wakes up at the deadline at the latest."""
        return max(0.0, min(delay, self.deadline - self.clock()))

    def check_deadline(self) -> None:
        """Raise :class:`TaskTimeoutError` if the deadline has passed."""
        if self.clock() >= self.deadline:
            raise self.timeout_error()

    def timeout_error(self) -> TaskTimeoutError:
        """The error describing a wait that ran out of time."""
        state = self.last_state.value if self.last_state else "never seen"
        return TaskTimeoutError(
            f"timed out waiting for flux task {self.flux_task_id} after {self.elapsed:.1f}s "
            f"and {self.polls} polls; last state: {state}. The task may still finish: "
            "a retry re-attaches to it",
            flux_task_id=self.flux_task_id,
        )
