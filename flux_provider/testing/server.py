"""The fake task API: :class:`FakeFluxServer`."""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from email.message import Message
from types import MappingProxyType, TracebackType
from urllib.parse import parse_qsl, urlsplit

from .account import (
    DEFAULT_BALANCE,
    DEFAULT_CREDITS_PER_IMAGE,
    Account,
    InsufficientCreditsError,
)
from .callbacks import Callback, post_callback
from .faults import Fault, FaultQueue
from .httpd import IncomingRequest, LoopbackHTTPServer, make_http_server
from .loopback import is_loopback_http_url
from .png import render_image
from .shapes import FailureShape, FakeTaskStatus, ResultShape, WireStyle
from .stats import REDACTED, FakeStats, RecordedRequest
from .tasks import SUCCESS, Ending, FakeTask, TaskRecord
from .wire import (
    MESSAGE_KEYS,
    MODEL,
    Endpoint,
    MessageKey,
    RejectedRequestError,
    Reply,
    error_reply,
    ok_reply,
    parse_create_body,
    route,
    validated_input,
)

__all__ = ["FakeFluxServer"]

_SERVE_POLL_INTERVAL = 0.01  # bounds how long stop() waits for serve_forever to notice
_JOIN_TIMEOUT = 5.0
# The callback timer fires this long after the task's duration so the clock has surely passed it.
_CALLBACK_MARGIN = 0.01
_COUNTERS: dict[Endpoint, str] = {
    "create": "create_requests",
    "poll": "poll_requests",
    "balance": "balance_requests",
    "estimate": "estimate_requests",
    "image": "image_requests",
}


def _redacted(headers: Message, auth_header: str) -> dict[str, str]:
    secret = {"authorization", "x-api-key", auth_header.lower()}
    return {
        name.lower(): REDACTED if name.lower() in secret else value
        for name, value in headers.items()
    }


class FakeFluxServer:
    """An in-process fake of the FLUX.2 [max] task API, served over real HTTP on loopback.

    It speaks the service's wire format (``CreateTask``, ``TaskInfo``, account balance,
    credit estimate, result files, callbacks) so code under test can use its ordinary HTTP
    client against :attr:`base_url`. Tasks are ``pending`` for the first third of
    ``duration`` seconds of ``clock`` time, then ``running``, then ``success`` (or ``failed``),
    computed on demand. Faults (:class:`Fault`), scripted failures and direct control
    (:meth:`complete`, :meth:`fail`, :meth:`submit`) cover error paths.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with FakeFluxServer(duration=0.2) as server:
            run_my_dag(base_url=server.base_url, api_key=server.api_key)
            assert server.stats.tasks_created == 1

    Behaviour worth knowing:

    * Every answer is a ``{"code", "message", "data"}`` envelope (result files aside).
    * Faults apply before the API key is checked, like a gateway's 429 would.
    * A wrong or missing key gets 401; after :meth:`disable_key` the right key gets 403.
    * Result files (``/files/<task_id>/0.png``) need no key, like the real CDN links.
    * Creating a task charges its cost to :attr:`balance` (402 and no task when the balance
      cannot pay); a task that fails is refunded when it ends.
    * A loopback ``callback_url`` receives the ``TaskInfo`` ``data`` object (or the whole
      envelope, with ``callback_envelope``) once, when the task ends: on time with the default
      clock, or, with an injected clock, as soon as the server next looks at the task (a poll,
      :meth:`state_of`, :attr:`tasks`). Other callback URLs are recorded but never called.

    All methods are thread-safe.
    """

    def __init__(
        self,
        *,
        api_key: str = "fake-key",
        host: str = "127.0.0.1",
        port: int = 0,
        duration: float = 1.0,
        auth_header: str = "x-api-key",
        clock: Callable[[], float] = time.monotonic,
        verbose: bool = False,
        message_key: MessageKey = "message",
        status_words: Mapping[FakeTaskStatus, str] | None = None,
        result_shape: ResultShape = "media_urls",
        failure_shape: FailureShape = "result",
        credits_per_image: float = DEFAULT_CREDITS_PER_IMAGE,
        balance: float = DEFAULT_BALANCE,
        estimate_endpoint: bool = True,
        callback_envelope: bool = False,
    ) -> None:
        """Configure the server; nothing is bound until :meth:`start`.

        Args:
            api_key: Key every endpoint but the result files requires.
            host: Address to listen on. Any address is accepted here; only the command line
                refuses non-loopback hosts.
            port: Port to listen on; ``0`` picks a free one (see :attr:`port`).
            duration: Seconds each task takes to end on its own.
            auth_header: ``"x-api-key"`` expects the raw key in that header;
                ``"Authorization"`` expects ``Bearer <key>``. Any other name expects the raw
                key in that header.
            clock: Monotonic time source for task statuses, injectable for tests.
            verbose: Log every request to stderr like ``http.server`` does.
            message_key: Name of the envelope's text field: ``"message"`` (documented) or
                ``"msg"``.
            status_words: Word to send for each canonical status (``pending``, ``running``,
                ``success``, ``failed``), e.g. ``{"success": "SUCCEEDED"}``; unmapped
                statuses are sent as themselves.
            result_shape: Where a successful task puts its image URL; one of
                :data:`~flux_provider.testing.RESULT_SHAPES`.
            failure_shape: Where a failed task puts its code and reason; one of
                :data:`~flux_provider.testing.FAILURE_SHAPES`.
            credits_per_image: Cost of a task (doubled when ``input.resolution`` is ``2K``).
            balance: Credits the account starts with.
            estimate_endpoint: Serve ``estimate-credits``; ``False`` makes it an unknown
                route (404), like a service without it.
            callback_envelope: POST callbacks as the whole ``{"code", "message", "data"}``
                envelope instead of the bare ``data`` object.

        Raises:
            ValueError: If an option has a value outside the ones listed.
        """
        if message_key not in MESSAGE_KEYS:
            raise ValueError(f"message_key must be one of {MESSAGE_KEYS}, got {message_key!r}")
        self._api_key = api_key
        self._host = host
        self._requested_port = port
        self._duration = _checked_seconds("duration", duration)
        self._auth_header = auth_header
        self._bearer = auth_header.lower() == "authorization"
        self._clock = clock
        self.verbose = verbose
        """Whether each request is logged to stderr."""
        self._message_key: MessageKey = message_key
        self._style = WireStyle(status_words or {}, result_shape, failure_shape)
        self._account = Account(balance=balance, credits_per_image=credits_per_image)
        self._estimate_endpoint = estimate_endpoint
        self._callback_envelope = callback_envelope
        self._key_disabled = False

        self._lock = threading.Lock()
        self._tasks: dict[str, TaskRecord] = {}
        self._faults = FaultQueue()
        self._planned_failures: deque[Ending] = deque()
        self._stats = FakeStats()
        self._timers: set[threading.Timer] = set()
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._port: int | None = None
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeFluxServer:
        """Bind the socket and serve in a daemon thread; does nothing if already running.

        Returns:
            The server itself, for chaining.

        Raises:
            RuntimeError: If the server was stopped (create a new one instead).
            OSError: If the address cannot be bound.
        """
        with self._lock:
            if self._stopped:
                raise RuntimeError("a stopped FakeFluxServer cannot be restarted")
            if self._httpd is not None:
                return self
            httpd = make_http_server(
                self._host,
                self._requested_port,
                self._respond,
                message_key=self._message_key,
                verbose=lambda: self.verbose,
            )
            self._port = int(httpd.server_port)
            url_host = f"[{self._host}]" if ":" in self._host else self._host
            self._base_url = f"http://{url_host}:{self._port}"
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": _SERVE_POLL_INTERVAL},
                name=f"fake-flux-api:{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and cancel pending callbacks.

        Does nothing if the server is not running.
        """
        with self._lock:
            httpd, thread = self._httpd, self._thread
            if httpd is None or self._stopped:
                return
            self._stopped = True
            timers = list(self._timers)
            self._timers.clear()
        for timer in timers:
            timer.cancel()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=_JOIN_TIMEOUT)

    def __enter__(self) -> FakeFluxServer:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- configuration -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``, the URL to give the client under test.

        Raises:
            RuntimeError: Before :meth:`start`.
        """
        if self._base_url is None:
            raise RuntimeError("FakeFluxServer is not started; call start() or use `with`")
        return self._base_url

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``).

        Raises:
            RuntimeError: Before :meth:`start`.
        """
        if self._port is None:
            raise RuntimeError("FakeFluxServer is not started; call start() or use `with`")
        return self._port

    @property
    def api_key(self) -> str:
        """The key the API endpoints require."""
        return self._api_key

    @property
    def auth_header(self) -> str:
        """Name of the header carrying the key (``x-api-key`` or ``Authorization``)."""
        return self._auth_header

    @property
    def duration(self) -> float:
        """Seconds a task takes to end on its own; changing it affects tasks created later."""
        with self._lock:
            return self._duration

    @duration.setter
    def duration(self, seconds: float) -> None:
        checked = _checked_seconds("duration", seconds)
        with self._lock:
            self._duration = checked

    @property
    def balance(self) -> float:
        """Credits left: the starting balance minus tasks charged plus failures refunded."""
        with self._lock:
            return self._account.balance(self._clock())

    @balance.setter
    def balance(self, credits: float) -> None:
        with self._lock:
            self._account.set_balance(credits, self._clock())

    @property
    def credits_per_image(self) -> float:
        """What a 1K task costs (a 2K one costs double)."""
        return self._account.credits_per_image

    @property
    def status_words(self) -> Mapping[FakeTaskStatus, str]:
        """Word sent for each canonical status that is not sent as itself."""
        with self._lock:
            return self._style.status_words

    @status_words.setter
    def status_words(self, words: Mapping[FakeTaskStatus, str]) -> None:
        with self._lock:
            self._style = replace(self._style, status_words=words)

    @property
    def result_shape(self) -> ResultShape:
        """Where success puts the image URL; changing it affects every later answer."""
        with self._lock:
            return self._style.result_shape

    @result_shape.setter
    def result_shape(self, shape: ResultShape) -> None:
        with self._lock:
            self._style = replace(self._style, result_shape=shape)

    @property
    def failure_shape(self) -> FailureShape:
        """Where failure puts its code and reason; changing it affects every later answer."""
        with self._lock:
            return self._style.failure_shape

    @failure_shape.setter
    def failure_shape(self, shape: FailureShape) -> None:
        with self._lock:
            self._style = replace(self._style, failure_shape=shape)

    def disable_key(self) -> None:
        """Answer every authenticated request carrying the right key with 403 "API key disabled"."""
        with self._lock:
            self._key_disabled = True

    def enable_key(self) -> None:
        """Undo :meth:`disable_key`."""
        with self._lock:
            self._key_disabled = False

    def airflow_connection_json(self) -> str:
        """JSON for an ``AIRFLOW_CONN_<ID>`` environment variable pointing at this server.

        The ``header_name`` extra is added when the server expects a header other than
        ``x-api-key``.
        """
        connection: dict[str, object] = {
            "conn_type": "flux",
            "host": self.base_url,
            "password": self._api_key,
        }
        if self._auth_header.lower() != "x-api-key":
            connection["extra"] = {"header_name": self._auth_header}
        return json.dumps(connection)

    # -- scripting -----------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Queue ``fault`` behind the faults already queued (first match applies first)."""
        with self._lock:
            self._faults.add(fault)

    def clear_faults(self) -> None:
        """Drop every queued fault, including ``times=None`` ones."""
        with self._lock:
            self._faults.clear()

    def fail_next_tasks(
        self, count: int = 1, *, code: int = 501, message: str = "generation failed"
    ) -> None:
        """Make the next ``count`` created tasks end ``failed`` with ``code`` and ``message``.

        Applies to tasks created through the API and through :meth:`submit`, in creation
        order. The tasks still walk through ``pending`` and ``running`` for ``duration``
        seconds.
        """
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        ending = Ending("failed", code, message)
        with self._lock:
            self._planned_failures.extend([ending] * count)

    def complete(self, flux_task_id: str) -> None:
        """Make a running task succeed now.

        Raises:
            KeyError: If the task is unknown.
            ValueError: If the task already failed (completing a succeeded task does nothing).
        """
        self._end(flux_task_id, SUCCESS)

    def fail(
        self, flux_task_id: str, *, code: int = 501, message: str = "generation failed"
    ) -> None:
        """Make a running task fail now with ``code`` and ``message``.

        Raises:
            KeyError: If the task is unknown.
            ValueError: If the task already succeeded (failing a failed task does nothing).
        """
        self._end(flux_task_id, Ending("failed", code, message))

    def submit(
        self,
        input: Mapping[str, object],
        *,
        model: str = MODEL,
        callback_url: str | None = None,
    ) -> str:
        """Create a task directly, without an HTTP request, and return its ``task_id``.

        For tests of code that waits on a task submitted elsewhere. The task behaves like
        one created through ``CreateTask`` but is neither counted in :attr:`stats` nor
        charged to :attr:`balance`. The server need not be started.

        Raises:
            ValueError: If ``input`` fails the checks ``CreateTask`` makes (a non-blank
                ``prompt``, well-formed ``img_urls``) or is not JSON-serializable.
        """
        checked = validated_input(input)
        return self._create(model=model, input=checked, callback_url=callback_url, via_api=False)

    # -- inspection ----------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, FakeTask]:
        """Read-only snapshot of every task, keyed by ``task_id``, in creation order."""
        with self._lock:
            now = self._clock()
            snapshot = {task_id: record.snapshot(now) for task_id, record in self._tasks.items()}
            due = [self._settle(record, now) for record in self._tasks.values()]
        self._dispatch(due)
        return MappingProxyType(snapshot)

    def state_of(self, flux_task_id: str) -> FakeTaskStatus:
        """The task's current canonical status (whatever ``status_words`` sends for it).

        Raises:
            KeyError: If the task is unknown.
        """
        with self._lock:
            record = self._record(flux_task_id)
            now = self._clock()
            status = record.status(now)
            due = self._settle(record, now)
        self._dispatch([due])
        return status

    @property
    def stats(self) -> FakeStats:
        """A copy of the request counters and request log."""
        with self._lock:
            return replace(self._stats, requests=list(self._stats.requests))

    def reset_stats(self) -> None:
        """Zero the counters and empty the request log."""
        with self._lock:
            self._stats = FakeStats()

    # -- tasks and credits (call with the lock held unless said otherwise) ----------------

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

    def _create(
        self, *, model: str, input: dict[str, object], callback_url: str | None, via_api: bool
    ) -> str:
        """Create a task (taking the lock); an API-created one is charged.

        Raises:
            InsufficientCreditsError: If ``via_api`` and the balance cannot pay (no task).
        """
        with self._lock:
            now = self._clock()
            cost = self._account.cost(input)
            if via_api:
                self._account.charge(cost, now)
                self._stats.tasks_created += 1
            task_id = self._new_task_id()
            ending = self._planned_failures.popleft() if self._planned_failures else SUCCESS
            record = TaskRecord(
                flux_task_id=task_id,
                model=model,
                input=input,
                callback_url=callback_url,
                duration=self._duration,
                started=now,
                created_at=time.time(),
                ending=ending,
                cost=cost,
                charged=via_api,
            )
            self._tasks[task_id] = record
            if record.charged and record.may_fail:
                self._account.refund_if_failed(record)
            if callback_url is not None and is_loopback_http_url(callback_url):
                record.callback_due = True
                # With the default clock this sends the callback on time even if nobody polls;
                # with an injected clock the next observation of the task sends it.
                self._start_timer(
                    record.duration + _CALLBACK_MARGIN, self._callback_timer_fired, task_id
                )
        return task_id

    def _end(self, flux_task_id: str, ending: Ending) -> None:
        """End a running task now (taking the lock)."""
        with self._lock:
            record = self._record(flux_task_id)
            now = self._clock()
            ended = record.terminal(now)
            if ended is not None:
                if ended.ending.status != ending.status:
                    raise ValueError(
                        f"task {flux_task_id!r} already ended with status {ended.ending.status!r}"
                    )
                return
            record.force(ending, now=now, wall=time.time())
            if record.charged and ending.status == "failed":
                self._account.refund_if_failed(record)
            self._account.settle(now)
            due = self._settle(record, now)
        self._dispatch([due])

    # -- requests (called from handler threads, without the lock) -------------------------

    def _respond(self, incoming: IncomingRequest) -> Reply | None:
        """The answer to one request; ``None`` drops the connection."""
        url = urlsplit(incoming.target)
        endpoint, image = route(incoming.method, url.path)
        if endpoint == "estimate" and not self._estimate_endpoint:
            endpoint = None
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        request = RecordedRequest(
            method=incoming.method,
            path=url.path,
            query=query,
            headers=_redacted(incoming.headers, self._auth_header),
            body=incoming.body,
            received_at=time.monotonic(),
            client_port=incoming.client_port,
        )
        fault = self._receive(endpoint, request)
        if fault is not None:
            if fault.delay > 0:
                time.sleep(fault.delay)
            if fault.drop:
                return None
            reply = fault.reply(self._message_key)
            if reply is not None:
                return reply
        if endpoint is None:
            return self._error(404, "not found")
        if endpoint == "image":
            return self._image(image)
        refusal = self._refusal(incoming.headers.get(self._auth_header))
        if refusal is not None:
            return refusal
        if endpoint == "create":
            return self._create_via_api(incoming.body)
        if endpoint == "poll":
            return self._task_info(query.get("task_id", ""))
        if endpoint == "balance":
            return self._ok({"balance": self.balance})
        return self._estimate(incoming.body)

    def _ok(self, data: object) -> Reply:
        return ok_reply(data, message_key=self._message_key)

    def _error(self, status: int, message: str) -> Reply:
        return error_reply(status, message, message_key=self._message_key)

    def _receive(self, endpoint: Endpoint | None, request: RecordedRequest) -> Fault | None:
        """Log a request and take the fault that applies to it, if any."""
        with self._lock:
            self._stats.requests.append(request)
            if endpoint is None:
                return None
            counter = _COUNTERS[endpoint]
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)
            return self._faults.take(endpoint)

    def _refusal(self, credential: str | None) -> Reply | None:
        """The 401/403 answer for ``credential``, or ``None`` when it may pass."""
        if not self._authorized(credential):
            if self._bearer:
                return self._error(401, "invalid or missing API key (send 'Bearer <key>')")
            return self._error(401, f"invalid or missing API key in the {self._auth_header} header")
        with self._lock:
            disabled = self._key_disabled
        return self._error(403, "API key disabled") if disabled else None

    def _authorized(self, credential: str | None) -> bool:
        if credential is None:
            return False
        if not self._bearer:
            return credential == self._api_key
        scheme, _, token = credential.partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self._api_key

    def _create_via_api(self, body: bytes) -> Reply:
        try:
            request = parse_create_body(body)
            task_id = self._create(
                model=request.model,
                input=request.input,
                callback_url=request.callback_url,
                via_api=True,
            )
        except RejectedRequestError as exc:
            return self._error(422, str(exc))
        except InsufficientCreditsError:
            return self._error(402, "insufficient credits")
        return self._ok({"task_id": task_id})

    def _estimate(self, body: bytes) -> Reply:
        try:
            request = parse_create_body(body)
        except RejectedRequestError as exc:
            return self._error(422, str(exc))
        return self._ok({"credits": self._account.cost(request.input), "estimated": False})

    def _task_info(self, task_id: str) -> Reply:
        if not task_id:
            return self._error(422, "query parameter 'task_id' is required")
        with self._lock:
            record = self._tasks.get(task_id)
            if record is None:
                return self._error(404, "task not found")
            now = self._clock()
            data = record.task_info(now, self._base_url or "", self._style)
            due = self._settle(record, now)
        self._dispatch([due])
        return self._ok(data)

    def _image(self, match: re.Match[str] | None) -> Reply:
        if match is None:
            return self._error(404, "file not found")
        with self._lock:
            record = self._tasks.get(match["task_id"])
            if record is None:
                return self._error(404, "file not found")
            now = self._clock()
            succeeded = record.status(now) == "success"
            task_input = record.input
            due = self._settle(record, now)
        self._dispatch([due])
        if not succeeded or int(match["index"]) != 0 or match["ext"].lower() != "png":
            return self._error(404, "file not found")
        prompt = task_input.get("prompt")
        image = render_image(
            prompt if isinstance(prompt, str) else "",
            task_input.get("seed"),
            task_input.get("aspect_ratio"),
        )
        return Reply(status=200, body=image, content_type="image/png")

    # -- callbacks -----------------------------------------------------------------------

    def _settle(self, record: TaskRecord, now: float) -> Callback | None:
        """The callback a just-observed ended task still owes, marking it sent.

        Call with the lock held; pass the result to :meth:`_dispatch` after releasing it.
        """
        if not record.callback_due or record.callback_url is None:
            return None
        if record.terminal(now) is None:
            return None
        record.callback_due = False
        data = record.task_info(now, self._base_url or "", self._style)
        payload = data
        if self._callback_envelope:
            payload = {"code": 200, self._message_key: "success", "data": data}
        return Callback(record.callback_url, payload)

    def _start_timer(self, delay: float, function: Callable[..., None], *args: object) -> None:
        """Run ``function(*args)`` in a daemon timer that :meth:`stop` cancels (lock held)."""
        if self._stopped:
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
        with self._lock:
            for callback in callbacks:
                self._start_timer(0.0, self._send_callback, callback)

    def _callback_timer_fired(self, flux_task_id: str) -> None:
        with self._lock:
            record = self._tasks.get(flux_task_id)
            due = self._settle(record, self._clock()) if record is not None else None
        if due is not None:
            self._send_callback(due)

    def _send_callback(self, callback: Callback) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stats.callbacks_sent += 1
        post_callback(callback)


def _checked_seconds(name: str, seconds: float) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds}")
    return float(seconds)
