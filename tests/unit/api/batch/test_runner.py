"""``BatchRunner``: one try of a batch, driven through a scripted I/O (no network, no clock)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from flux_provider.api.batch import (
    BatchRunner,
    BatchSettings,
    ItemRecord,
    ItemState,
    batch_inputs,
)
from flux_provider.api.downloads import ResultExpiredError, ResultRejectedError, StoredImage
from flux_provider.api.errors import (
    FluxError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    TaskTimeoutError,
    TransportError,
)
from flux_provider.api.models import Flux2MaxInput, TaskInfo, TaskState
from flux_provider.api.polling import TaskWait

LOG = logging.getLogger("test.batch")


def _done(flux_task_id: str, *, state: TaskState = TaskState.SUCCESS, **fields: Any) -> TaskInfo:
    urls = [f"https://cdn.example/{flux_task_id}.png"] if state is TaskState.SUCCESS else []
    return TaskInfo(
        flux_task_id=flux_task_id,
        state=state,
        raw_state=state.value,
        result_urls=urls,
        credits=6.0,
        **fields,
    )


@dataclass
class ScriptedIO:
    """The runner's I/O: every call recorded; what creates, follows and stores do is scripted.

    ``creates`` maps an item's prompt to the errors its successive creates raise before one is
    accepted; ``ends`` maps a task id to how its generation ends; ``gates`` hold a task's end
    until the test opens them (to see how many generate at once).
    """

    creates: dict[str, list[FluxError]] = field(default_factory=dict)
    ends: dict[str, Callable[[str], TaskInfo | FluxError]] = field(default_factory=dict)
    storing: dict[str, FluxError | OSError] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    gated: bool = False
    owner: bool = True
    events: list[tuple[str, Any]] = field(default_factory=list)
    following: int = 0
    most_following: int = 0
    created: int = 0

    async def create(self, request: Flux2MaxInput) -> str:
        self.events.append(("create", request.prompt))
        pending = self.creates.get(request.prompt, [])
        if pending:
            raise pending.pop(0)
        self.created += 1
        flux_task_id = f"task_{request.prompt}_{self.created}"
        if self.gated:
            self.gates[flux_task_id] = asyncio.Event()
        return flux_task_id

    async def follow(self, wait: TaskWait, first_delay: float) -> TaskInfo:
        self.events.append(("follow", wait.flux_task_id))
        self.following += 1
        self.most_following = max(self.most_following, self.following)
        try:
            gate = self.gates.get(wait.flux_task_id)
            if gate is not None:
                await gate.wait()
            else:
                await asyncio.sleep(0)
            end = self.ends.get(wait.flux_task_id, _done)(wait.flux_task_id)
        finally:
            self.following -= 1
        if isinstance(end, FluxError):
            raise end
        return end

    async def store(self, info: TaskInfo) -> list[StoredImage]:
        self.events.append(("store", info.flux_task_id))
        error = self.storing.get(info.flux_task_id)
        if error is not None:
            raise error
        return [
            StoredImage(f"file:///out/{info.flux_task_id}_0.png", 10, "ab" * 32, "image/png", url)
            for url in info.result_urls
        ]

    async def save(self, record: ItemRecord) -> None:
        self.events.append(("save", (record.index, record.state, record.flux_task_id)))

    async def still_runner(self) -> bool:
        return self.owner


class NoSleep:
    """Records the pauses the runner asks for and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(0)


def _runner(
    io: ScriptedIO,
    prompts: list[str],
    *,
    records: dict[int, ItemRecord] | None = None,
    try_number: int = 1,
    sleep: NoSleep | None = None,
    **settings: Any,
) -> BatchRunner:
    options = {"progress_every": 3600.0, **settings}
    return BatchRunner(
        batch_inputs(prompts, None),
        records if records is not None else {},
        io,
        BatchSettings(**options),
        try_number=try_number,
        log=LOG,
        sleep=sleep or NoSleep(),
    )


def _states(runner: BatchRunner) -> dict[int, ItemState]:
    return {index: record.state for index, record in sorted(runner.records.items())}


async def test_every_item_is_submitted_once_followed_and_stored() -> None:
    io = ScriptedIO()
    runner = _runner(io, ["a", "b", "c"])
    end = await runner.run()
    assert end.status == "ended"
    assert (end.counts.stored, end.counts.failed, end.counts.credits) == (3, 0, 18.0)
    assert [e for e in io.events if e[0] == "create"] == [("create", p) for p in "abc"]
    assert all(r.submissions == 1 and r.stored for r in runner.records.values())


async def test_the_task_id_is_saved_before_the_task_is_followed() -> None:
    io = ScriptedIO()
    await _runner(io, ["a"]).run()
    kinds = [(kind, value) for kind, value in io.events if kind in ("save", "follow")]
    assert kinds[0] == ("save", (0, ItemState.SUBMITTED, "task_a_1"))
    assert kinds[1] == ("follow", "task_a_1")


async def _until(condition: Callable[[], bool], turns: int = 10_000) -> None:
    """Let the event loop run until ``condition`` holds (a bounded number of turns)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_never_more_generate_at_once_than_max_in_flight() -> None:
    io = ScriptedIO(gated=True)
    runner = _runner(io, [f"p{i}" for i in range(10)], max_in_flight=3)
    running = asyncio.ensure_future(runner.run())

    def stored() -> int:
        return sum(kind == "store" for kind, _ in io.events)

    def settled(released: int) -> bool:
        """``released`` images stored, and as many generating as ``max_in_flight`` allows."""
        return stored() == released and io.following == min(3, 10 - released)

    for released in range(10):
        await _until(partial(settled, released))
        next(gate for gate in io.gates.values() if not gate.is_set()).set()
    end = await running
    assert end.counts.stored == 10
    assert io.most_following == 3
    assert io.created == 10


async def test_a_full_service_is_waited_for_as_told_never_a_failure() -> None:
    full = RateLimitedError("rate limited", status_code=429, retry_after=7.0)
    io = ScriptedIO(creates={"a": [full, full, full]})
    sleep = NoSleep()
    end = await _runner(io, ["a", "b"], sleep=sleep).run()
    assert end.counts.stored == 2
    assert sleep.pauses.count(7.0) == 3
    assert io.created == 2


async def test_a_refusal_without_retry_after_backs_off() -> None:
    io = ScriptedIO(creates={"a": [ServerError("boom", status_code=500)] * 3})
    sleep = NoSleep()
    await _runner(io, ["a"], sleep=sleep).run()
    assert sleep.pauses[:3] == [1.0, 2.0, 4.0]


async def test_an_item_the_service_rejects_fails_alone_and_for_good() -> None:
    io = ScriptedIO(creates={"b": [InvalidRequestError("bad ratio", status_code=422)]})
    runner = _runner(io, ["a", "b", "c"])
    end = await runner.run()
    assert end.status == "ended"
    assert _states(runner) == {
        0: ItemState.SUCCEEDED,
        1: ItemState.FAILED,
        2: ItemState.SUCCEEDED,
    }
    assert runner.records[1].on_retry == "never"
    assert runner.records[1].submissions == 0


async def test_a_create_whose_fate_is_unknown_is_submitted_again_by_the_next_try() -> None:
    io = ScriptedIO(creates={"a": [RequestTimeoutError("read timed out")]})
    runner = _runner(io, ["a"])
    await runner.run()
    assert runner.records[0].state is ItemState.FAILED
    assert runner.records[0].on_retry == "resubmit"
    assert io.created == 0


async def test_a_create_no_item_can_pass_stops_submitting_and_ends_with_it() -> None:
    broke = InsufficientCreditsError("insufficient credits", status_code=402)
    io = ScriptedIO(creates={"c": [broke]})
    runner = _runner(io, ["a", "b", "c", "d", "e"], max_in_flight=2, submitters=1)
    end = await runner.run()
    assert end.status == "error"
    assert end.retryable is False
    assert "insufficient credits" in (end.message or "")
    assert _states(runner) == {0: ItemState.SUCCEEDED, 1: ItemState.SUCCEEDED, 2: ItemState.PENDING}
    assert [p for kind, p in io.events if kind == "create"] == ["a", "b", "c"]


async def test_failed_generations_are_classified_for_the_next_try() -> None:
    io = ScriptedIO(
        ends={
            "task_a_1": lambda i: _done(i, state=TaskState.FAILED, fail_code="501"),
            "task_b_2": lambda i: _done(i, state=TaskState.FAILED, fail_msg="NSFW content"),
        }
    )
    runner = _runner(io, ["a", "b", "c"], submitters=1)
    end = await runner.run()
    assert (end.counts.stored, end.counts.failed) == (1, 2)
    assert runner.records[0].on_retry == "resubmit"
    assert runner.records[1].on_retry == "never"


@pytest.mark.parametrize(
    ("error", "on_retry"),
    [
        (ResultExpiredError("expired", status_code=410), "resubmit"),
        (TransportError("reset"), "reattach"),
        (ResultRejectedError("not an image"), "never"),
        (OSError("disk full"), "reattach"),
    ],
)
async def test_images_that_cannot_be_stored(error: Exception, on_retry: str) -> None:
    io = ScriptedIO(storing={"task_a_1": error})  # type: ignore[dict-item]
    runner = _runner(io, ["a"])
    await runner.run()
    assert runner.records[0].state is ItemState.FAILED
    assert runner.records[0].on_retry == on_retry
    assert runner.records[0].task is not None  # the generation itself is known


async def test_polling_that_gives_up_re_attaches_next_try() -> None:
    io = ScriptedIO(ends={"task_a_1": lambda i: ServerError("down", status_code=500)})
    runner = _runner(io, ["a"])
    await runner.run()
    assert (runner.records[0].state, runner.records[0].on_retry) == (ItemState.FAILED, "reattach")


async def test_the_deadline_leaves_generating_items_for_the_next_try() -> None:
    io = ScriptedIO(ends={"task_a_1": lambda i: TaskTimeoutError("timeout reached")})
    runner = _runner(io, ["a"])
    end = await runner.run()
    assert end.status == "ended"
    assert runner.records[0].state is ItemState.SUBMITTED


async def test_a_deadline_that_passes_while_items_generate_ends_with_timeout() -> None:
    io = ScriptedIO(gated=True)
    runner = _runner(io, ["a", "b"], deadline=-math.inf + 1)
    end = await runner.run()
    assert end.status == "timeout"
    assert "still generating" in (end.message or "")


async def test_a_runner_that_lost_its_claim_stops_submitting() -> None:
    io = ScriptedIO(owner=False)
    runner = _runner(io, ["a", "b"])
    end = await runner.run()
    assert end.status == "superseded"
    assert io.created == 0


async def test_submitted_items_are_re_attached_never_submitted_again() -> None:
    records = {0: ItemRecord(0), 1: ItemRecord(1)}
    records[0].submitted("task_old_0", 1)
    io = ScriptedIO()
    runner = _runner(io, ["a", "b"], records=records, try_number=2)
    end = await runner.run()
    assert end.counts.stored == 2
    assert [p for kind, p in io.events if kind == "create"] == ["b"]
    assert ("follow", "task_old_0") in io.events
    assert runner.records[0].submissions == 1


async def test_a_retry_submits_only_what_a_retry_can_help() -> None:
    records = {index: ItemRecord(index) for index in range(4)}
    for index, record in records.items():
        record.submitted(f"task_old_{index}", 1)
    records[0].succeeded([], 1.0)
    records[1].failed("moderated", "never", 1)
    records[2].failed("generation failed", "resubmit", 1)
    records[3].failed("polling failed", "reattach", 1)
    io = ScriptedIO()
    runner = _runner(io, ["a", "b", "c", "d"], records=records, try_number=2)
    await runner.run()
    assert [p for kind, p in io.events if kind == "create"] == ["c"]
    assert ("follow", "task_old_3") in io.events
    assert _states(runner) == {
        0: ItemState.SUCCEEDED,
        1: ItemState.FAILED,
        2: ItemState.SUCCEEDED,
        3: ItemState.SUCCEEDED,
    }
    assert runner.records[2].submissions == 2


async def test_failures_of_this_try_wait_for_the_next_one() -> None:
    records = {0: ItemRecord(0)}
    records[0].failed("generation failed", "resubmit", 2)
    io = ScriptedIO()
    runner = _runner(io, ["a"], records=records, try_number=2)
    await runner.run()
    assert io.created == 0


async def test_progress_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    io = ScriptedIO()
    with caplog.at_level(logging.INFO, logger="test.batch"):
        await _runner(io, ["a", "b"]).run()
    assert "Batch: 2 of 2 stored, 0 generating, 0 failed, 12 credits" in caplog.messages


async def test_a_create_under_way_is_recorded_even_when_the_run_is_cancelled() -> None:
    accepted = asyncio.Event()
    answered = asyncio.Event()

    class SlowCreate(ScriptedIO):
        async def create(self, request: Flux2MaxInput) -> str:
            accepted.set()
            await answered.wait()  # the API accepted it; its answer is on the way
            return await super().create(request)

    io = SlowCreate()
    runner = _runner(io, ["a"])
    running = asyncio.ensure_future(runner.run())
    await _until(accepted.is_set)
    running.cancel()
    await asyncio.sleep(0)  # the cancellation reaches the run first
    answered.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert ("save", (0, ItemState.SUBMITTED, "task_a_1")) in io.events
    assert runner.records[0].flux_task_id == "task_a_1"
