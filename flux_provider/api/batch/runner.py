"""Running one try of a batch: keep up to ``max_in_flight`` generating, store each as it ends.

:class:`BatchRunner` holds the decisions and no I/O of its own: a :class:`BatchIO` creates,
follows and stores tasks and saves records (the trigger gives it the connection's shared
client, a downloader and the journal). Each item's record is saved the moment its state
changes, its task id before anything else happens once the API accepted it, so whoever runs the
batch next re-attaches instead of paying again.

What each outcome means for an item:

* a create refused because the service is full (429) or refused outright (455, 5xx, a
  connection that never opened): the same item is submitted again after the wait the service
  asked for (or a back-off), never a failure;
* a create the service rejected for the item itself (422): the item failed, no retry can help;
* a create whose fate is unknown (a timeout or a reset after the request left, an answer
  without a task id): the item failed; the next Airflow try submits it again;
* a create that no item can pass (401, 403, 402, 404, 505): nothing more is submitted, the
  items already generating are followed to their end, and the batch ends with that error;
* a generation that failed: retryable failures are submitted anew by the next Airflow try,
  moderation and validation never;
* images that cannot be stored: an expired result is generated anew by the next try, a
  transient failure re-attached (stored again without paying), a refused one (not an image,
  too large) never retried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from flux_provider.api.batch.items import (
    BatchCounts,
    ItemRecord,
    ItemState,
    OnRetry,
    plan_try,
)
from flux_provider.api.downloads import ResultExpiredError, StoredImage
from flux_provider.api.errors import (
    AuthenticationError,
    ConnectionConfigError,
    FeatureDisabledError,
    FluxError,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitedError,
    TaskTimeoutError,
)
from flux_provider.api.formatting import seconds_text
from flux_provider.api.models import Flux2MaxInput, TaskInfo
from flux_provider.api.network import within
from flux_provider.api.polling import WaitSettings
from flux_provider.api.retry import may_resend

SUBMITTERS = 4
"""Creates under way at once: enough that a slow create does not hold the others up."""
STORERS = 8
"""Items storing their images at once."""
PROGRESS_EVERY = 30.0
"""Seconds between two progress lines in the log."""
CREATE_BACKOFF_MAX = 30.0
"""The longest pause before submitting again after a refusal without ``Retry-After``."""

_BATCH_FATAL = (
    AuthenticationError,
    InsufficientCreditsError,
    FeatureDisabledError,
    NotFoundError,
    ConnectionConfigError,
)
"""Errors of a create that no other item could pass either."""

EndStatus = Literal["ended", "timeout", "error", "superseded"]
"""``ended``: every item of this try ended; ``timeout``: the deadline came first; ``error``:
something no item can pass stopped the submitting; ``superseded``: another runner claimed the
batch (a triggerer that took this one for dead)."""


class BatchIO(Protocol):
    """The I/O a runner needs; every method may raise :class:`FluxError`."""

    async def create(self, request: Flux2MaxInput) -> str:
        """Submit one task; its id."""
        ...

    async def follow(self, wait: Any, first_delay: float) -> TaskInfo:
        """Poll ``wait``'s task (a :class:`~flux_provider.api.polling.TaskWait`) until it ends."""
        ...

    async def store(self, info: TaskInfo) -> list[StoredImage]:
        """Copy an ended task's images to the batch's storage."""
        ...

    async def save(self, record: ItemRecord) -> None:
        """Write one item's record to the journal."""
        ...

    async def still_runner(self) -> bool:
        """Whether this runner's claim on the batch is still the latest."""
        ...


@dataclass(frozen=True)
class BatchSettings:
    """How a try runs: the in-flight bound, the deadline, how each task is polled."""

    max_in_flight: int = 16
    deadline: float = math.inf
    deadline_name: str = "timeout"
    wait: WaitSettings = field(default_factory=WaitSettings)
    submitters: int = SUBMITTERS
    storers: int = STORERS
    progress_every: float = PROGRESS_EVERY

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")


@dataclass(frozen=True)
class BatchEnd:
    """How a try of the batch ended, and the counts at that moment."""

    status: EndStatus
    counts: BatchCounts
    message: str | None = None
    retryable: bool = True


def _retry_for_storing(error: FluxError) -> OnRetry:
    if isinstance(error, ResultExpiredError):
        return "resubmit"
    return "reattach" if error.retryable else "never"


class BatchRunner:
    """One try of a batch: see the module's docstring.

    :param inputs: every item's validated input, by index.
    :param records: the journal's records (updated in place as items move on).
    :param try_number: the Airflow try running now (which failures it submits anew).
    """

    def __init__(
        self,
        inputs: Sequence[Flux2MaxInput],
        records: dict[int, ItemRecord],
        io: BatchIO,
        settings: BatchSettings,
        *,
        try_number: int,
        log: logging.Logger | Any,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.inputs = inputs
        self.records = records
        self.io = io
        self.settings = settings
        self.try_number = try_number
        self.log = log
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._stop: FluxError | None = None
        self._superseded = False
        self._crash: BaseException | None = None
        self._following: set[asyncio.Task[None]] = set()
        self._recording: set[asyncio.Future[str]] = set()

    @property
    def counts(self) -> BatchCounts:
        """How far the batch is now."""
        return BatchCounts.of(self.records.values(), len(self.inputs))

    async def run(self) -> BatchEnd:
        """Run until every item of this try has ended, or the deadline, or a stop."""
        plan = plan_try(self.records, len(self.inputs), self.try_number)
        work: deque[tuple[bool, int]] = deque(
            [(True, index) for index in plan.reattach] + [(False, index) for index in plan.submit]
        )
        slots = asyncio.Semaphore(self.settings.max_in_flight)
        storing = asyncio.Semaphore(self.settings.storers)
        feeders = [
            asyncio.ensure_future(self._feed(work, slots, storing))
            for _ in range(max(1, self.settings.submitters))
        ]
        progress = asyncio.ensure_future(self._report_progress())
        timed_out = False
        try:
            await within(self._time_left(), self._drain(feeders))
        except asyncio.TimeoutError:
            timed_out = True
        finally:
            for task in [*feeders, *self._following, progress]:
                task.cancel()
            await asyncio.gather(*feeders, *self._following, progress, return_exceptions=True)
            # A create the API may have accepted is recorded even when the run is cancelled.
            await asyncio.gather(*self._recording, return_exceptions=True)
        if self._crash is not None:
            raise self._crash
        self.log.info("Batch: %s", self.counts.progress_line())
        return self._end(timed_out)

    def _end(self, timed_out: bool) -> BatchEnd:
        counts = self.counts
        if self._superseded:
            return BatchEnd("superseded", counts, "another runner claimed the batch")
        if self._stop is not None:
            return BatchEnd("error", counts, str(self._stop), self._stop.retryable)
        if timed_out:
            message = (
                f"{self.settings.deadline_name} reached with {counts.generating:,} of "
                f"{counts.total:,} items still generating; a retry re-attaches to them"
            )
            return BatchEnd("timeout", counts, message)
        return BatchEnd("ended", counts)

    def _time_left(self) -> float | None:
        left = self.settings.deadline - self._clock()
        return None if left == math.inf else max(left, 0.0)

    async def _drain(self, feeders: Sequence[asyncio.Future[None]]) -> None:
        await asyncio.gather(*feeders)
        while self._following:
            await asyncio.wait(set(self._following))
        if self._crash is not None:
            raise self._crash

    async def _report_progress(self) -> None:
        while True:
            # Real time, not the injected sleep: the log keeps a wall-clock cadence.
            await asyncio.sleep(self.settings.progress_every)
            self.log.info("Batch: %s", self.counts.progress_line())

    def _stopped(self) -> bool:
        return self._stop is not None or self._superseded or self._crash is not None

    async def _feed(
        self,
        work: deque[tuple[bool, int]],
        slots: asyncio.Semaphore,
        storing: asyncio.Semaphore,
    ) -> None:
        """Take items one by one, each once a slot is free: follow it again, or submit it."""
        while work and not self._stopped():
            await slots.acquire()
            if not work or self._stopped():
                slots.release()
                return
            reattach, index = work.popleft()
            if reattach:
                self.log.info(
                    "Batch item %s: re-attaching to flux task %s",
                    index,
                    self.records[index].flux_task_id,
                )
            elif not await self._submit(index):
                slots.release()
                continue
            self._start_following(index, slots, storing)

    def _start_following(
        self, index: int, slots: asyncio.Semaphore, storing: asyncio.Semaphore
    ) -> None:
        task = asyncio.ensure_future(self._follow(index, slots, storing))
        self._following.add(task)
        task.add_done_callback(self._followed)

    def _followed(self, task: asyncio.Task[None]) -> None:
        self._following.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            self._crash = task.exception()

    async def _submit(self, index: int) -> bool:
        """Submit item ``index`` until the API accepts it; ``False`` if it will not be."""
        record = self.records.setdefault(index, ItemRecord(index))
        refusals = 0
        while True:
            if not await self.io.still_runner():
                self._superseded = True
                return False
            try:
                await self._create_and_record(index, record)
            except FluxError as error:
                refusals += 1
                if isinstance(error, RateLimitedError) or may_resend(error, idempotent=False):
                    await self._pause_after_refusal(index, error, refusals)
                    if self._stopped():
                        return False
                    continue
                if isinstance(error, _BATCH_FATAL):
                    self._stop = self._stop or error
                    return False
                on_retry: OnRetry = "resubmit" if error.retryable else "never"
                await self._fail(record, f"submitting failed: {error}", on_retry)
                return False
            return True

    async def _create_and_record(self, index: int, record: ItemRecord) -> str:
        """Submit the item and record its task id, as one step a cancellation cannot split:
        the task id is saved before anything else happens, even if the run is cancelled while
        the create is under way (a triggerer dropping this trigger)."""
        step = asyncio.ensure_future(self._create_then_save(index, record))
        self._recording.add(step)
        step.add_done_callback(self._recording.discard)
        return await asyncio.shield(step)

    async def _create_then_save(self, index: int, record: ItemRecord) -> str:
        flux_task_id = await self.io.create(self.inputs[index])
        record.submitted(flux_task_id, self.try_number)
        await self.io.save(record)
        return flux_task_id

    async def _pause_after_refusal(self, index: int, error: FluxError, refusals: int) -> None:
        backoff = min(CREATE_BACKOFF_MAX, math.ldexp(1.0, refusals - 1))
        delay = error.retry_after if error.retry_after is not None else backoff
        delay = max(0.0, min(delay, self.settings.deadline - self._clock()))
        if refusals == 1 or refusals % 10 == 0:
            self.log.info(
                "Batch item %s: the service refused the create (%s); submitting again in %s",
                index,
                error,
                seconds_text(delay),
            )
        await self._sleep(delay)

    async def _follow(
        self, index: int, slots: asyncio.Semaphore, storing: asyncio.Semaphore
    ) -> None:
        """Poll the item's task until it ends (freeing its slot), then store its images."""
        record = self.records[index]
        assert record.flux_task_id is not None
        wait = self.settings.wait.start(
            record.flux_task_id,
            clock=self._clock,
            deadline=self.settings.deadline,
            deadline_name=self.settings.deadline_name,
        )
        first_delay = self._rng.uniform(0.0, wait.schedule.interval(1))
        try:
            info = await self.io.follow(wait, first_delay)
        except TaskTimeoutError:
            return  # the batch's deadline: the item stays submitted, a retry re-attaches
        except FluxError as error:
            await self._follow_failed(record, error)
            return
        finally:
            slots.release()
        record.task = info.summary()
        record.ended_seen_at = self._clock()
        failure = info.failure()
        if failure is not None:
            await self._fail(record, str(failure), "resubmit" if failure.retryable else "never")
            return
        async with storing:
            await self._store(record, info)

    async def _follow_failed(self, record: ItemRecord, error: FluxError) -> None:
        if isinstance(error, _BATCH_FATAL) and not isinstance(error, NotFoundError):
            self._stop = self._stop or error
            return
        on_retry: OnRetry = (
            "resubmit"
            if isinstance(error, NotFoundError)
            else ("reattach" if error.retryable else "never")
        )
        await self._fail(record, f"polling failed: {error}", on_retry)

    async def _store(self, record: ItemRecord, info: TaskInfo) -> None:
        try:
            stored = await self.io.store(info)
        except FluxError as error:
            await self._fail(record, f"storing failed: {error}", _retry_for_storing(error))
            return
        except OSError as error:
            await self._fail(record, f"storing failed: {error}", "reattach")
            return
        record.succeeded([image.as_dict() for image in stored], self._clock())
        await self.io.save(record)

    async def _fail(self, record: ItemRecord, error: str, on_retry: OnRetry) -> None:
        record.failed(error, on_retry, self.try_number)
        self.log.warning(
            "Batch item %s failed (%s): %s",
            record.index,
            {"resubmit": "a retry submits it anew", "reattach": "a retry re-attaches"}.get(
                on_retry, "no retry can help"
            ),
            error,
        )
        await self.io.save(record)


def ended_items(records: Mapping[int, ItemRecord], count: int) -> bool:
    """Whether every item has ended (succeeded, or failed)."""
    return all(
        index in records and records[index].state in (ItemState.SUCCEEDED, ItemState.FAILED)
        for index in range(count)
    )
