"""How to wait for a task: the polling schedule, the decisions of one wait, and its two loops.

:class:`TaskWait` holds every decision and no I/O: adaptive intervals (fast at
first, then backing off to a cap), ``Retry-After`` honoured, transient poll
errors absorbed up to a bound, a 404 right after creation tolerated briefly,
an unknown status word reported once, and an absolute wall-clock deadline.
Two loops drive it: :func:`wait_blocking` (the worker path; the sensor's
pokes make one step each) and :func:`wait_async` (the trigger).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from flux_provider.api.config import DEFAULT_WAIT_TIMEOUT
from flux_provider.api.errors import FluxError, NotFoundError, RateLimitedError, TaskTimeoutError
from flux_provider.api.formatting import count_text, seconds_text
from flux_provider.api.models import TaskInfo, TaskState
from flux_provider.api.retry import RETRY_AFTER_MAX

DEFAULT_MAX_CONSECUTIVE_ERRORS = 5
DEFAULT_NOT_FOUND_GRACE = 3
ERROR_BACKOFF_MAX = 30.0

PollOutcome = TaskInfo | FluxError
"""What one poll gave: the task's info, or the error the poll raised."""

OnPoll = Callable[["TaskWait", PollOutcome], None]
"""Called after each poll that did not end the wait (to log progress)."""


@dataclass(frozen=True)
class PollSchedule:
    """Seconds to wait before each poll: ``initial`` growing by ``factor`` up to ``maximum``.

    The default starts at 2 s and settles at 5 s, so a 30 s generation costs
    about 8 polls and is noticed within 5 s. ``PollSchedule.fixed(10)`` polls
    at a constant interval.
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
        try:
            growth: float = self.factor ** max(polls_made - 1, 0)
        except OverflowError:  # thousands of polls into a long wait: long past the cap
            return self.maximum
        return min(self.maximum, self.initial * growth)


@dataclass(frozen=True)
class WaitSettings:
    """How often to poll a task, for how long, and how many failed polls in a row to absorb.

    The one place these settings are checked (an operator's or a sensor's when its DAG is
    parsed, a client's when it is called), and the one place a wait and its deadline begin
    (:meth:`start`).
    """

    poll_interval: float | None = None
    """Fixed seconds between polls; ``None`` = the adaptive :class:`PollSchedule`."""
    timeout: float = DEFAULT_WAIT_TIMEOUT
    """Seconds from the start of the wait to its deadline."""
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    """Transient poll failures in a row absorbed before the wait fails."""

    def __post_init__(self) -> None:
        if self.poll_interval is not None and not (
            self.poll_interval > 0 and math.isfinite(self.poll_interval)
        ):
            raise ValueError(
                "poll_interval must be > 0 seconds (or None for adaptive), "
                f"got {self.poll_interval}"
            )
        if not (self.timeout > 0 and not math.isnan(self.timeout)):
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.max_consecutive_errors < 0:
            raise ValueError(
                f"max_consecutive_errors must be >= 0, got {self.max_consecutive_errors}"
            )

    @property
    def schedule(self) -> PollSchedule:
        """The polling schedule these settings describe."""
        return PollSchedule.from_interval(self.poll_interval)

    def start(
        self,
        flux_task_id: str,
        *,
        clock: Callable[[], float] = time.time,
        deadline: float | None = None,
        deadline_name: str = "timeout",
    ) -> TaskWait:
        """A new wait for ``flux_task_id``; its deadline is ``timeout`` from now unless given
        (an absolute ``clock()`` time, named ``deadline_name`` when it passes)."""
        return TaskWait(
            flux_task_id,
            deadline=clock() + self.timeout if deadline is None else deadline,
            deadline_name=deadline_name,
            schedule=self.schedule,
            max_consecutive_errors=self.max_consecutive_errors,
            clock=clock,
        )


@dataclass
class TaskWait:
    """The state of one wait for one task; a loop feeds it each poll's :data:`PollOutcome`.

    :meth:`observe` returns the info once the task has ended, or sets
    :attr:`delay` (the pause before the next poll, clamped to the deadline);
    it raises once an error is hopeless or too many polls failed in a row.
    :meth:`check_deadline` raises :class:`TaskTimeoutError` once it has passed.
    """

    flux_task_id: str
    deadline: float = math.inf
    deadline_name: str = "timeout"
    """The limit the deadline comes from, named when it passes (``timeout``,
    ``execution_timeout``)."""
    schedule: PollSchedule = field(default_factory=PollSchedule)
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    not_found_grace: int = DEFAULT_NOT_FOUND_GRACE
    clock: Callable[[], float] = time.time
    started: float = 0.0
    polls: int = 0
    errors_in_a_row: int = 0
    last_state: TaskState | None = None
    last_raw_state: str | None = None
    last_error: FluxError | None = None
    state_changed: bool = False
    """Whether the last successful poll saw a different status word than the one before."""
    unknown_words: set[str] = field(default_factory=set)
    """Unknown status words already reported (each is reported once)."""
    new_unknown_word: bool = False
    """Whether the last poll brought a status word not seen (nor known) before."""
    delay: float = 0.0
    """The pause before the next poll, set by :meth:`observe`."""
    _retry_after: float | None = None

    def __post_init__(self) -> None:
        if not self.started:
            self.started = self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds since this wait began."""
        return self.clock() - self.started

    def observe(self, outcome: PollOutcome) -> TaskInfo | None:
        """Take in one poll's outcome: the info if the task ended, else ``None`` (see ``delay``)."""
        if isinstance(outcome, FluxError):
            self.delay = self.clamp(self.record_error(outcome))
            return None
        ended = self.record_info(outcome)
        if ended is None:
            self.delay = self.next_delay()
        return ended

    def after_poll(self, outcome: PollOutcome, on_poll: OnPoll | None = None) -> TaskInfo | None:
        """One step of a loop: :meth:`observe`, then (if not ended) report it and check the
        deadline; the loop then sleeps :attr:`delay`."""
        ended = self.observe(outcome)
        if ended is None:
            if on_poll is not None:
                on_poll(self, outcome)
            self.check_deadline()
        return ended

    def record_info(self, info: TaskInfo) -> TaskInfo | None:
        """Count a successful poll; return the info if the task has ended."""
        self.polls += 1
        self.errors_in_a_row = 0
        self._retry_after = None
        self.state_changed = info.raw_state != self.last_raw_state
        self.new_unknown_word = (
            info.state is TaskState.UNKNOWN and info.raw_state not in self.unknown_words
        )
        if self.new_unknown_word:
            self.unknown_words.add(info.raw_state)
        self.last_state = info.state
        self.last_raw_state = info.raw_state
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
        elif self.errors_in_a_row > self.max_consecutive_errors and not isinstance(
            error, RateLimitedError
        ):
            # A 429 is the server saying when to come back, not a failure: only the deadline
            # ends a wait that keeps being rate limited.
            error.message = (
                f"{error.message} ({self.errors_in_a_row} polls in a row failed; giving up)"
            )
            raise error
        # The server's Retry-After is honoured beyond our own back-off ceiling.
        self._retry_after = min(error.retry_after, RETRY_AFTER_MAX) if error.retry_after else None
        backoff = math.ldexp(self.schedule.interval(1), self.errors_in_a_row - 1)
        return max(min(backoff, ERROR_BACKOFF_MAX), self._retry_after or 0.0)

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
        state = self.last_raw_state or "never seen"
        failing = ""
        if self.errors_in_a_row and self.last_error is not None:
            failing = f"; the last {self.errors_in_a_row} failed: {self.last_error.message}"
        return TaskTimeoutError(
            f"{self.deadline_name} reached: waited {seconds_text(self.elapsed)} for flux task "
            f"{self.flux_task_id} ({count_text(self.polls, 'poll')}; "
            f"last state: {state}{failing}). The task may still finish: a retry re-attaches to it",
            flux_task_id=self.flux_task_id,
        )

    def progress(self, outcome: PollOutcome) -> tuple[str, str] | None:
        """What to log about a poll that did not end the wait, as (level, message), or ``None``.

        A failed poll is a warning; a new status word is news; an unknown word
        is a warning the first time it is seen, and never a failure.
        """
        if isinstance(outcome, FluxError):
            return (
                "warning",
                f"Poll {self.polls} of flux task {self.flux_task_id} failed ({outcome}); "
                f"{self.errors_in_a_row} in a row, retrying in {seconds_text(self.delay)}",
            )
        if self.new_unknown_word:
            return (
                "warning",
                f"Flux task {self.flux_task_id} reports the unknown status "
                f"{outcome.raw_state!r}: treating it as not ended, polling until the deadline",
            )
        if self.state_changed:
            return (
                "info",
                f"Flux task {self.flux_task_id} is {outcome.raw_state} after "
                f"{seconds_text(self.elapsed)} ({count_text(self.polls, 'poll')})",
            )
        return None

    def to_record(self) -> dict[str, Any]:
        """The counters that must survive between two pokes run in different processes."""
        return {
            "started": self.started,
            "polls": self.polls,
            "errors_in_a_row": self.errors_in_a_row,
            "last_state": self.last_state.value if self.last_state else None,
            "last_raw_state": self.last_raw_state,
            "unknown_words": sorted(self.unknown_words),
        }

    def restore(self, record: Any) -> None:
        """Take back the counters of :meth:`to_record` (ignored if unusable)."""
        if not isinstance(record, dict):
            return
        try:
            self.started = float(record["started"])
            self.polls = int(record["polls"])
            self.errors_in_a_row = int(record["errors_in_a_row"])
            last = record.get("last_state")
            self.last_state = TaskState(last) if last else None
            self.last_raw_state = record.get("last_raw_state")
            self.unknown_words = {str(word) for word in record.get("unknown_words") or ()}
        except (KeyError, TypeError, ValueError):
            return


def log_progress(log: logging.Logger | Any, wait: TaskWait, outcome: PollOutcome) -> None:
    """Log what :meth:`TaskWait.progress` finds worth saying (an :data:`OnPoll` callback)."""
    progress = wait.progress(outcome)
    if progress is not None:
        level, message = progress
        log.log(logging.WARNING if level == "warning" else logging.INFO, message)


def _attempt(poll: Callable[[], TaskInfo]) -> PollOutcome:
    try:
        return poll()
    except FluxError as error:
        return error


def wait_blocking(
    wait: TaskWait,
    poll: Callable[[], TaskInfo],
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_poll: OnPoll | None = None,
) -> TaskInfo:
    """Poll until the task ends; the worker's loop. Raises as :meth:`TaskWait.observe` does."""
    wait.check_deadline()
    while (ended := wait.after_poll(_attempt(poll), on_poll)) is None:
        sleep(wait.delay)
    return ended


async def wait_async(
    wait: TaskWait,
    poll: Callable[[], Awaitable[TaskInfo]],
    *,
    sleep: Callable[[float], Awaitable[None]],
    on_poll: OnPoll | None = None,
    first_delay: float = 0.0,
) -> TaskInfo:
    """Poll until the task ends; the trigger's loop (``first_delay`` before the first poll)."""
    wait.check_deadline()
    if first_delay > 0:
        await sleep(wait.clamp(first_delay))
    while True:
        try:
            outcome: PollOutcome = await poll()
        except FluxError as error:
            outcome = error
        if (ended := wait.after_poll(outcome, on_poll)) is not None:
            return ended
        await sleep(wait.delay)
