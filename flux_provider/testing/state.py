"""What the fake remembers between requests: tasks, credits, faults, counters, owed callbacks."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from .account import Account
from .callbacks import Callback, post_callback
from .faults import Fault, FaultQueue
from .inflight import InFlight, InFlightLimitError
from .loopback import is_loopback_http_url
from .shapes import FakeTaskStatus, WireStyle
from .stats import FakeStats, RecordedRequest
from .tasks import SUCCESS, Ending, FakeTask, TaskRecord
from .wire import Endpoint, MessageKey

__all__ = ["ServerState"]

_Read = TypeVar("_Read")

# The callback timer fires this long after the task's duration so the clock has surely passed it.
_CALLBACK_MARGIN = 0.01
_COUNTERS: dict[Endpoint, str] = {
    "create": "create_requests",
    "poll": "poll_requests",
    "balance": "balance_requests",
    "estimate": "estimate_requests",
    "image": "image_requests",
}


class ServerState:
    """Everything a :class:`~flux_provider.testing.FakeFluxServer` remembers, behind one lock.

    The server's public methods and its request answers both work on it. Its attributes are
    read and written with :attr:`lock` held; its methods take the lock themselves.

    A task created with a loopback ``callback_url`` owes one callback, sent the first time the
    task is seen ended (a poll, a snapshot, :meth:`status_of`) or by a timer set for its end,
    whichever comes first. Nothing is sent once :attr:`stopped` is set.
    """

    def __init__(
        self,
        *,
        duration: float,
        clock: Callable[[], float],
        style: WireStyle,
        account: Account,
        in_flight: InFlight,
        message_key: MessageKey,
        callback_envelope: bool,
    ) -> None:
        """Start empty: no task, no fault, zeroed counters."""
        self.lock = threading.Lock()
        self.clock = clock
        self.duration = duration
        """Seconds tasks created from now on take."""
        self.style = style
        self.account = account
        self.in_flight = in_flight
        """The tasks created through the API that have not ended, and the limit on them."""
        self.key_disabled = False
        self.base_url = ""
        """The server's URL once it listens: result URLs are built on it."""
        self.stopped = False
        self.faults = FaultQueue()
        self.planned_failures: deque[Ending] = deque()
        self.stats = FakeStats()
        self._message_key: MessageKey = message_key
        self._callback_envelope = callback_envelope
        self._tasks: dict[str, TaskRecord] = {}
        self._timers: set[threading.Timer] = set()

    # -- tasks ---------------------------------------------------------------------------

    def create(
        self, *, model: str, input: dict[str, object], callback_url: str | None, via_api: bool
    ) -> str:
        """Create a task and return its id; an API-created one is limited, charged and counted.

        Raises:
            InFlightLimitError: If ``via_api`` and the account has its limit of tasks in
                flight (no task, no charge; counted in ``rate_limited_creates``).
            InsufficientCreditsError: If ``via_api`` and the balance cannot pay (no task).
        """
        with self.lock:
            now = self.clock()
            cost = self.account.cost(input)
            if via_api:
                self._admit(now)
                self.account.charge(cost, now)
                self.stats.tasks_created += 1
            task_id = self._new_task_id()
            ending = self.planned_failures.popleft() if self.planned_failures else SUCCESS
            record = TaskRecord(
                flux_task_id=task_id,
                model=model,
                input=input,
                callback_url=callback_url,
                duration=self.duration,
                started=now,
                created_at=time.time(),
                planned=ending,
                cost=cost,
                charged=via_api,
            )
            self._tasks[task_id] = record
            if via_api:
                in_flight = self.in_flight.add(record, now)
                self.stats.peak_in_flight = max(self.stats.peak_in_flight, in_flight)
            if record.charged and record.may_fail:
                self.account.refund_if_failed(record)
            if callback_url is not None and is_loopback_http_url(callback_url):
                record.callback_due = True
                # With the default clock this sends the callback on time even if nobody polls;
                # with an injected clock the next observation of the task sends it.
                self._start_timer(
                    record.duration + _CALLBACK_MARGIN, self._callback_timer_fired, task_id
                )
        return task_id

    def _admit(self, now: float) -> None:
        """Let one more API task in, or count and raise the refusal (call with the lock held)."""
        try:
            self.in_flight.admit(now)
        except InFlightLimitError:
            self.stats.rate_limited_creates += 1
            raise

    def reset_stats(self) -> None:
        """Zero the counters and empty the request log; the peak starts from the tasks in flight."""
        with self.lock:
            self.stats = FakeStats(peak_in_flight=self.in_flight.count(self.clock()))

    def end(self, flux_task_id: str, ending: Ending) -> None:
        """End a running task now with ``ending``.

        Raises:
            KeyError: If the task is unknown.
            ValueError: If the task already ended otherwise (ending it the same way again
                does nothing).
        """
        with self.lock:
            record = self._record(flux_task_id)
            now = self.clock()
            ended = record.terminal(now)
            if ended is not None:
                if ended.ending.status != ending.status:
                    raise ValueError(
                        f"task {flux_task_id!r} already ended with status {ended.ending.status!r}"
                    )
                return
            record.force(ending, now=now, wall=time.time())
            self.in_flight.forget(flux_task_id)
            if record.charged and ending.status == "failed":
                self.account.refund_if_failed(record)
            self.account.settle(now)
            due = self._settle(record, now)
        self._dispatch([due])

    def snapshots(self) -> dict[str, FakeTask]:
        """A copy of every task, keyed by ``task_id``, in creation order."""
        with self.lock:
            now = self.clock()
            snapshot = {task_id: record.snapshot(now) for task_id, record in self._tasks.items()}
            due = [self._settle(record, now) for record in self._tasks.values()]
        self._dispatch(due)
        return snapshot

    def status_of(self, flux_task_id: str) -> FakeTaskStatus:
        """The task's current canonical status.

        Raises:
            KeyError: If the task is unknown.
        """
        status = self._observe(flux_task_id, lambda record, now: record.status(now))
        if status is None:
            raise KeyError(f"unknown task id {flux_task_id!r}")
        return status

    def task_info(self, flux_task_id: str) -> dict[str, object] | None:
        """The ``data`` object of the task's ``TaskInfo`` answer; ``None`` if it is unknown."""
        return self._observe(
            flux_task_id, lambda record, now: record.task_info(now, self.base_url, self.style)
        )

    def succeeded_input(self, flux_task_id: str) -> Mapping[str, object] | None:
        """The input of a task that has succeeded (its result file exists); else ``None``."""
        return self._observe(
            flux_task_id,
            lambda record, now: record.input if record.status(now) == "success" else None,
        )

    def balance(self) -> float:
        """Credits left now."""
        with self.lock:
            return self.account.balance(self.clock())

    def receive(self, endpoint: Endpoint | None, request: RecordedRequest) -> Fault | None:
        """Log a request, count it and take the fault that applies to it, if any."""
        with self.lock:
            self.stats.requests.append(request)
            if endpoint is None:
                return None
            counter = _COUNTERS[endpoint]
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            return self.faults.take(endpoint)

    def _observe(
        self, flux_task_id: str, read: Callable[[TaskRecord, float], _Read]
    ) -> _Read | None:
        """``read(record, now)`` of a task, sending the callback it then owes; ``None`` if unknown.

        Takes the lock (``read`` runs with it held).
        """
        with self.lock:
            record = self._tasks.get(flux_task_id)
            if record is None:
                return None
            now = self.clock()
            value = read(record, now)
            due = self._settle(record, now)
        self._dispatch([due])
        return value

    def _record(self, flux_task_id: str) -> TaskRecord:
        try:
            return self._tasks[flux_task_id]
        except KeyError:
            raise KeyError(f"unknown task id {flux_task_id!r}") from None

    def _new_task_id(self) -> str:
        while True:
            task_id = f"task_{uuid.uuid4().hex}"
            if task_id not in self._tasks:
                return task_id

    # -- callbacks -----------------------------------------------------------------------

    def cancel_callbacks(self) -> None:
        """Cancel every pending callback timer (call after setting :attr:`stopped`)."""
        with self.lock:
            timers = list(self._timers)
            self._timers.clear()
        for timer in timers:
            timer.cancel()

    def _settle(self, record: TaskRecord, now: float) -> Callback | None:
        """The callback a just-observed ended task still owes, marking it sent.

        Call with the lock held; pass the result to :meth:`_dispatch` after releasing it.
        """
        if not record.callback_due or record.callback_url is None:
            return None
        if record.terminal(now) is None:
            return None
        record.callback_due = False
        data = record.task_info(now, self.base_url, self.style)
        payload = data
        if self._callback_envelope:
            payload = {"code": 200, self._message_key: "success", "data": data}
        return Callback(record.callback_url, payload)

    def _start_timer(self, delay: float, function: Callable[..., None], *args: object) -> None:
        """Run ``function(*args)`` in a daemon timer that :meth:`cancel_callbacks` cancels.

        Call with the lock held.
        """
        if self.stopped:
            return
        self._timers = {timer for timer in self._timers if timer.is_alive()}
        timer = threading.Timer(delay, function, args=args)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _dispatch(self, due: Iterable[Callback | None]) -> None:
        callbacks = [callback for callback in due if callback is not None]
        if not callbacks:
            return
        with self.lock:
            for callback in callbacks:
                self._start_timer(0.0, self._send_callback, callback)

    def _callback_timer_fired(self, flux_task_id: str) -> None:
        with self.lock:
            record = self._tasks.get(flux_task_id)
            due = self._settle(record, self.clock()) if record is not None else None
        if due is not None:
            self._send_callback(due)

    def _send_callback(self, callback: Callback) -> None:
        with self.lock:
            if self.stopped:
                return
            self.stats.callbacks_sent += 1
        post_callback(callback)
