"""The decisions of one wait (``TaskWait``, ``PollSchedule``) and its two loops, on a fake clock."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from flux_provider.api.errors import (
    AuthenticationError,
    FluxError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TaskTimeoutError,
)
from flux_provider.api.models import TaskInfo, TaskState
from flux_provider.api.polling import (
    ERROR_BACKOFF_MAX,
    PollOutcome,
    PollSchedule,
    TaskWait,
    wait_async,
    wait_blocking,
)
from flux_provider.api.retry import RETRY_AFTER_MAX


@dataclass
class FakeClock:
    """A clock that moves only when something sleeps on it."""

    now: float = 1_000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def info(word: str, state: TaskState | None = None, **extra: object) -> TaskInfo:
    guessed = {
        "pending": TaskState.PENDING,
        "running": TaskState.RUNNING,
        "success": TaskState.SUCCESS,
        "failed": TaskState.FAILED,
    }.get(word, TaskState.UNKNOWN)
    return TaskInfo(flux_task_id="task_1", state=state or guessed, raw_state=word, **extra)


def poller(outcomes: list[PollOutcome]) -> tuple[list[int], object]:
    calls: list[int] = []
    pending = list(outcomes)

    def poll() -> TaskInfo:
        calls.append(1)
        outcome = pending.pop(0)
        if isinstance(outcome, FluxError):
            raise outcome
        return outcome

    return calls, poll


def test_adaptive_schedule_grows_to_its_cap() -> None:
    schedule = PollSchedule()
    assert [schedule.interval(n) for n in range(1, 6)] == [2.0, 3.0, 4.5, 5.0, 5.0]
    assert PollSchedule.fixed(7).interval(9) == 7
    # A wait of days at the cap (growth 1.5**n overflows a float after ~1750 polls).
    assert PollSchedule().interval(100_000) == 5.0
    assert PollSchedule.from_interval(None) == PollSchedule()
    with pytest.raises(ValueError, match="growth factor"):
        PollSchedule(factor=0.5)


def test_the_blocking_loop_sleeps_the_schedule_until_the_end() -> None:
    clock = FakeClock()
    wait = TaskWait("task_1", deadline=clock() + 100, clock=clock)
    calls, poll = poller([info("pending"), info("running"), info("running"), info("success")])
    final = wait_blocking(wait, poll, sleep=clock.sleep)  # type: ignore[arg-type]
    assert final.state is TaskState.SUCCESS
    assert len(calls) == 4
    assert clock.slept == [2.0, 3.0, 4.5]


async def test_the_async_loop_makes_the_same_decisions() -> None:
    clock = FakeClock()
    wait = TaskWait("task_1", deadline=clock() + 100, clock=clock)
    outcomes: list[PollOutcome] = [info("pending"), ServerError("blip"), info("success")]

    async def poll() -> TaskInfo:
        outcome = outcomes.pop(0)
        if isinstance(outcome, FluxError):
            raise outcome
        return outcome

    seen: list[str] = []
    final = await wait_async(
        wait,
        poll,
        sleep=clock.asleep,
        on_poll=lambda w, o: seen.append(type(o).__name__),
        first_delay=1.5,
    )
    assert final.state is TaskState.SUCCESS
    assert clock.slept == [1.5, 2.0, 2.0]  # first delay, the schedule's 2 s, the error back-off
    assert seen == ["TaskInfo", "ServerError"]


def test_transient_errors_back_off_and_reset_on_success() -> None:
    clock = FakeClock()
    wait = TaskWait("task_1", deadline=math.inf, clock=clock)
    for expected in (2.0, 4.0, 8.0):
        assert wait.observe(ServerError("down")) is None
        assert wait.delay == expected
    assert wait.observe(info("running")) is None
    assert wait.errors_in_a_row == 0
    wait.observe(ServerError("down"))
    assert wait.delay == 2.0


def test_error_backoff_is_capped_and_honours_retry_after() -> None:
    wait = TaskWait("task_1", max_consecutive_errors=20, clock=FakeClock())
    for _ in range(10):
        wait.observe(ServerError("down"))
    assert wait.delay == ERROR_BACKOFF_MAX
    fresh = TaskWait("task_1", clock=FakeClock())
    fresh.observe(RateLimitedError("slow", retry_after=12))
    assert fresh.delay == 12
    fresh.observe(info("running"))
    assert fresh.delay == 3.0  # back on the schedule (second poll), the Retry-After forgotten


@pytest.mark.parametrize(("retry_after", "delay"), [(45, 45), (90, 90), (600, RETRY_AFTER_MAX)])
def test_a_retry_after_beyond_the_backoff_ceiling_is_honoured(
    retry_after: float, delay: float
) -> None:
    """The server's Retry-After wins over our 30 s back-off ceiling, up to the client's cap."""
    wait = TaskWait("task_1", clock=FakeClock())
    wait.observe(RateLimitedError("slow", retry_after=retry_after))
    assert wait.delay == delay
    assert delay > ERROR_BACKOFF_MAX


def test_rate_limited_polls_never_end_the_wait_by_themselves() -> None:
    wait = TaskWait("task_1", max_consecutive_errors=2, clock=FakeClock())
    for _ in range(10):
        assert wait.observe(RateLimitedError("slow down", retry_after=5)) is None
    assert wait.errors_in_a_row == 10
    assert wait.observe(info("success", result_urls=["https://cdn.example/0.png"])) is not None


def test_too_many_errors_in_a_row_end_the_wait() -> None:
    wait = TaskWait("task_1", max_consecutive_errors=2, clock=FakeClock())
    wait.observe(ServerError("down"))
    wait.observe(ServerError("down"))
    with pytest.raises(ServerError, match="3 polls in a row failed"):
        wait.observe(ServerError("down"))


def test_a_hopeless_error_ends_the_wait_at_once() -> None:
    wait = TaskWait("task_1", clock=FakeClock())
    with pytest.raises(AuthenticationError):
        wait.observe(AuthenticationError("bad key"))


def test_not_found_is_tolerated_only_before_the_task_was_seen() -> None:
    wait = TaskWait("task_1", not_found_grace=2, clock=FakeClock())
    wait.observe(NotFoundError("nope"))
    wait.observe(NotFoundError("nope"))
    with pytest.raises(NotFoundError):
        wait.observe(NotFoundError("nope"))
    seen = TaskWait("task_1", clock=FakeClock())
    seen.observe(info("running"))
    with pytest.raises(NotFoundError):
        seen.observe(NotFoundError("gone"))


def test_the_deadline_ends_the_wait_naming_its_limit() -> None:
    clock = FakeClock()
    wait = TaskWait("task_1", deadline=clock() + 5, deadline_name="execution_timeout", clock=clock)
    calls, poll = poller([info("running")] * 10)
    with pytest.raises(TaskTimeoutError, match="execution_timeout reached") as caught:
        wait_blocking(wait, poll, sleep=clock.sleep)  # type: ignore[arg-type]
    assert "task_1" in str(caught.value)
    assert "last state: running" in str(caught.value)
    assert sum(clock.slept) == pytest.approx(5)  # the last sleep was shortened to the deadline
    assert len(calls) == 3


def test_unknown_words_are_reported_once_and_never_end_the_wait() -> None:
    wait = TaskWait("task_1", clock=FakeClock())
    messages = []
    for word in ("rendering", "rendering", "running", "rendering", "upscaling"):
        outcome = info(word)
        assert wait.observe(outcome) is None
        messages.append(wait.progress(outcome))
    warnings = [m for m in messages if m is not None and m[0] == "warning"]
    assert [w[1].split("status ")[1].split(":")[0] for w in warnings] == [
        "'rendering'",
        "'upscaling'",
    ]
    assert messages[1] is None  # the same word again is not news


def test_progress_reports_state_changes_and_failed_polls() -> None:
    wait = TaskWait("task_1", clock=FakeClock())
    first = info("pending")
    wait.observe(first)
    assert wait.progress(first) == ("info", "Flux task task_1 is pending after 0 s (1 poll)")
    wait.observe(first)
    assert wait.progress(first) is None
    error = ServerError("down")
    wait.observe(error)
    progress = wait.progress(error)
    assert progress is not None
    assert progress[0] == "warning"
    assert "1 in a row" in progress[1]


def test_the_counters_survive_a_round_trip() -> None:
    clock = FakeClock()
    wait = TaskWait("task_1", clock=clock)
    wait.observe(info("rendering"))
    wait.observe(ServerError("down"))
    wait.observe(ServerError("down"))
    later = TaskWait("task_1", clock=clock)
    later.restore(wait.to_record())
    assert later.errors_in_a_row == 2
    assert later.polls == 3
    assert later.last_state is TaskState.UNKNOWN
    assert later.unknown_words == {"rendering"}
    assert later.started == wait.started


@pytest.mark.parametrize("record", [None, "x", {"started": "soon"}, {}])
def test_an_unusable_record_is_ignored(record: object) -> None:
    wait = TaskWait("task_1", clock=FakeClock())
    wait.restore(record)
    assert wait.polls == 0
    assert wait.errors_in_a_row == 0
