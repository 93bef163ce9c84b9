"""The fake task API: :class:`FakeFluxServer` and its stdlib HTTP request handler."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import socket
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import MappingProxyType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from .faults import Endpoint, Fault, FaultQueue
from .loopback import is_loopback_http_url
from .png import render_image
from .stats import REDACTED, FakeStats, RecordedRequest
from .tasks import SUCCESS, Ending, FakeTask, TaskRecord, TaskState
from .wire import (
    CREATE_PATH,
    MODEL,
    POLL_PATH,
    InvalidRequestError,
    Reply,
    error_reply,
    ok_reply,
    parse_create_body,
    validated_input,
)

__all__ = ["FakeFluxServer"]

_MAX_BODY_BYTES = 16 * 1024 * 1024
_SERVE_POLL_INTERVAL = 0.01  # bounds how long stop() waits for serve_forever to notice
_JOIN_TIMEOUT = 5.0
_CALLBACK_TIMEOUT = 5.0
# The callback timer fires this long after the task's duration so the clock has surely passed it.
_CALLBACK_MARGIN = 0.01
_IMAGE_PATH = re.compile(r"^/files/(?P<task_id>[^/]+)/(?P<index>\d+)\.(?P<ext>[A-Za-z0-9]+)$")
# Callbacks only go to loopback addresses, so never route them through an environment proxy.
_CALLBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _route(method: str, path: str) -> tuple[Endpoint | None, re.Match[str] | None]:
    if method == "POST" and path == CREATE_PATH:
        return "create", None
    if method == "GET" and path == POLL_PATH:
        return "poll", None
    if method == "GET":
        match = _IMAGE_PATH.match(path)
        if match is not None:
            return "image", match
    return None, None


def _redacted(headers: Message, auth_header: str) -> dict[str, str]:
    secret = {"authorization", "x-api-key", auth_header.lower()}
    return {
        name.lower(): REDACTED if name.lower() in secret else value
        for name, value in headers.items()
    }


@dataclass(frozen=True)
class _Callback:
    url: str
    data: dict[str, object]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Handlers may sleep in a delay fault or idle on keep-alive; stop() must not wait for them.
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], fake: FakeFluxServer) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, a DNS query the fake doesn't need.
        TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down open keep-alive connections so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # Clients vanishing mid-answer (or stop() closing their socket) is not the fake's error.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeFluxAPI/1.0"
    # Buffer each answer so headers and body leave in one write (http.server flushes after
    # every request), and disable Nagle so no answer waits on the client's delayed ACK.
    wbufsize = -1
    disable_nagle_algorithm = True

    @property
    def _fake(self) -> FakeFluxServer:
        return cast(_HTTPServer, self.server).fake

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        if self._fake.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes | None:
        """The request body, or ``None`` after answering a body we cannot read."""
        if self.headers.get("Transfer-Encoding", "identity").lower() != "identity":
            self._send(error_reply(411, "send the body with a Content-Length", close=True))
            return None
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b""
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            self._send(error_reply(400, "invalid Content-Length", close=True))
            return None
        if length > _MAX_BODY_BYTES:
            self._send(error_reply(413, "request body too large", close=True))
            return None
        return self.rfile.read(length)

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        fake = self._fake
        url = urlsplit(self.path)
        endpoint, image = _route(self.command, url.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        request = RecordedRequest(
            method=self.command,
            path=url.path,
            query=query,
            headers=_redacted(self.headers, fake.auth_header),
            body=body,
            received_at=time.monotonic(),
            client_port=int(self.client_address[1]),
        )
        fault = fake._receive(endpoint, request)
        if fault is not None:
            if fault.delay > 0:
                time.sleep(fault.delay)
            if fault.drop:
                self.close_connection = True
                return
            reply = fault.reply()
            if reply is not None:
                self._send(reply)
                return
        self._send(fake._answer(endpoint, image, query, self.headers.get(fake.auth_header), body))

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)


class FakeFluxServer:
    """An in-process fake of the FLUX task API, served over real HTTP on loopback.

    It speaks the real wire format (``createTask``, ``recordInfo``, result files, callbacks)
    so code under test can use its ordinary HTTP client against :attr:`base_url`. Tasks walk
    ``waiting`` -> ``queuing`` -> ``generating`` -> ``success`` over ``duration`` seconds of
    ``clock`` time, computed on demand. Faults (:class:`Fault`), scripted failures and
    direct control (:meth:`complete`, :meth:`fail`, :meth:`submit`) cover error paths.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with FakeFluxServer(duration=0.2) as server:
            run_my_dag(base_url=server.base_url, api_key=server.api_key)
            assert server.stats.tasks_created == 1

    Behaviour worth knowing:

    * Faults apply before the API key is checked, like a gateway's 429 would.
    * Result files (``/files/<taskId>/0.png``) need no key, like the real CDN links.
    * A loopback ``callBackUrl`` receives the ``recordInfo`` ``data`` object once, when the
      task ends: on time with the default clock, or, with an injected clock, as soon as the
      server next looks at the task (a poll, :meth:`state_of`, :attr:`tasks`). Other callback
      URLs are recorded but never called.

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
    ) -> None:
        """Configure the server; nothing is bound until :meth:`start`.

        Args:
            api_key: Key the create and poll endpoints require.
            host: Address to listen on. Any address is accepted here; only the command line
                refuses non-loopback hosts.
            port: Port to listen on; ``0`` picks a free one (see :attr:`port`).
            duration: Seconds each task takes to end on its own.
            auth_header: ``"x-api-key"`` expects the raw key in that header;
                ``"Authorization"`` expects ``Bearer <key>``. Any other name expects the raw
                key in that header.
            clock: Monotonic time source for task states, injectable for tests.
            verbose: Log every request to stderr like ``http.server`` does.
        """
        self._api_key = api_key
        self._host = host
        self._requested_port = port
        self._duration = _checked_duration(duration)
        self._auth_header = auth_header
        self._bearer = auth_header.lower() == "authorization"
        self._clock = clock
        self.verbose = verbose
        """Whether each request is logged to stderr."""

        self._lock = threading.Lock()
        self._tasks: dict[str, TaskRecord] = {}
        self._faults = FaultQueue()
        self._planned_failures: deque[Ending] = deque()
        self._stats = FakeStats()
        self._task_counter = 0
        self._timers: set[threading.Timer] = set()
        self._httpd: _HTTPServer | None = None
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
            ipv6 = ":" in self._host
            server_class = _HTTPServerV6 if ipv6 else _HTTPServer
            httpd = server_class((self._host, self._requested_port), self)
            self._port = int(httpd.server_port)
            url_host = f"[{self._host}]" if ipv6 else self._host
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
        """The key the create and poll endpoints require."""
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
        checked = _checked_duration(seconds)
        with self._lock:
            self._duration = checked

    def airflow_connection_json(self) -> str:
        """JSON for an ``AIRFLOW_CONN_<ID>`` environment variable pointing at this server."""
        return json.dumps({"conn_type": "flux", "host": self.base_url, "password": self._api_key})

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
        self, count: int = 1, *, fail_code: str = "500", fail_msg: str = "generation failed"
    ) -> None:
        """Make the next ``count`` created tasks end in ``fail`` instead of ``success``.

        Applies to tasks created through the API and through :meth:`submit`, in creation
        order. The tasks still walk through the running states for ``duration`` seconds.
        """
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        ending = Ending("fail", fail_code, fail_msg)
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
        self, flux_task_id: str, *, fail_code: str = "500", fail_msg: str = "generation failed"
    ) -> None:
        """Make a running task fail now with ``fail_code`` and ``fail_msg``.

        Raises:
            KeyError: If the task is unknown.
            ValueError: If the task already succeeded (failing a failed task does nothing).
        """
        self._end(flux_task_id, Ending("fail", fail_code, fail_msg))

    def submit(
        self,
        input: Mapping[str, object],
        *,
        model: str = MODEL,
        callback_url: str | None = None,
    ) -> str:
        """Create a task directly, without an HTTP request, and return its ``taskId``.

        For tests of code that waits on a task submitted elsewhere. The task behaves like
        one created through ``createTask`` but is not counted in :attr:`stats`. The server
        need not be started.

        Raises:
            ValueError: If ``input`` has no non-empty ``prompt`` or is not JSON-serializable.
        """
        checked = validated_input(input)
        body: dict[str, object] = {"model": model, "input": checked}
        if callback_url is not None:
            body["callBackUrl"] = callback_url
        return self._create(
            model=model, input=checked, body=body, callback_url=callback_url, via_api=False
        )

    # -- inspection ----------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, FakeTask]:
        """Read-only snapshot of every task, keyed by ``taskId``, in creation order."""
        with self._lock:
            now = self._clock()
            snapshot = {task_id: record.snapshot(now) for task_id, record in self._tasks.items()}
            due = [self._settle(record, now) for record in self._tasks.values()]
        self._dispatch(due)
        return MappingProxyType(snapshot)

    def state_of(self, flux_task_id: str) -> TaskState:
        """The task's current state.

        Raises:
            KeyError: If the task is unknown.
        """
        with self._lock:
            record = self._record(flux_task_id)
            now = self._clock()
            state = record.state(now)
            due = self._settle(record, now)
        self._dispatch([due])
        return state

    @property
    def stats(self) -> FakeStats:
        """A copy of the request counters and request log."""
        with self._lock:
            return replace(self._stats, requests=list(self._stats.requests))

    def reset_stats(self) -> None:
        """Zero the counters and empty the request log."""
        with self._lock:
            self._stats = FakeStats()

    # -- internals shared with the request handler ---------------------------------------

    def _record(self, flux_task_id: str) -> TaskRecord:
        try:
            return self._tasks[flux_task_id]
        except KeyError:
            raise KeyError(f"unknown task id {flux_task_id!r}") from None

    def _create(
        self,
        *,
        model: str,
        input: dict[str, object],
        body: dict[str, object],
        callback_url: str | None,
        via_api: bool,
    ) -> str:
        with self._lock:
            self._task_counter += 1
            wall = time.time()
            task_id = f"task_flux-2_{int(wall * 1000):013d}{self._task_counter}"
            ending = self._planned_failures.popleft() if self._planned_failures else SUCCESS
            record = TaskRecord(
                flux_task_id=task_id,
                body=body,
                model=model,
                input=input,
                callback_url=callback_url,
                duration=self._duration,
                started=self._clock(),
                created_at=wall,
                ending=ending,
            )
            self._tasks[task_id] = record
            if via_api:
                self._stats.tasks_created += 1
            if callback_url is not None and is_loopback_http_url(callback_url):
                record.callback_due = True
                # With the default clock this sends the callback on time even if nobody polls;
                # with an injected clock the next observation of the task sends it.
                self._start_timer(
                    record.duration + _CALLBACK_MARGIN, self._callback_timer_fired, task_id
                )
        return task_id

    def _end(self, flux_task_id: str, ending: Ending) -> None:
        with self._lock:
            record = self._record(flux_task_id)
            now = self._clock()
            ended = record.terminal(now)
            if ended is not None:
                if ended.ending.state != ending.state:
                    raise ValueError(
                        f"task {flux_task_id!r} already ended in state {ended.ending.state!r}"
                    )
                return
            record.force(ending, now=now, wall=time.time())
            due = self._settle(record, now)
        self._dispatch([due])

    def _receive(self, endpoint: Endpoint | None, request: RecordedRequest) -> Fault | None:
        """Log a request and take the fault that applies to it, if any."""
        with self._lock:
            self._stats.requests.append(request)
            if endpoint is None:
                return None
            if endpoint == "create":
                self._stats.create_requests += 1
            elif endpoint == "poll":
                self._stats.poll_requests += 1
            else:
                self._stats.image_requests += 1
            return self._faults.take(endpoint)

    def _answer(
        self,
        endpoint: Endpoint | None,
        image: re.Match[str] | None,
        query: Mapping[str, str],
        credential: str | None,
        body: bytes,
    ) -> Reply:
        """The normal (unfaulted) answer to a request."""
        if endpoint is None:
            return error_reply(404, "not found")
        if endpoint == "image":
            return self._image(image)
        if not self._authorized(credential):
            if self._bearer:
                return error_reply(401, "invalid or missing API key (send 'Bearer <key>')")
            return error_reply(401, f"invalid or missing API key in the {self._auth_header} header")
        if endpoint == "create":
            return self._create_via_api(body)
        return self._poll(query.get("taskId", ""))

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
        except InvalidRequestError as exc:
            return error_reply(422, str(exc))
        task_id = self._create(
            model=request.model,
            input=request.input,
            body=request.body,
            callback_url=request.callback_url,
            via_api=True,
        )
        return ok_reply({"taskId": task_id})

    def _poll(self, task_id: str) -> Reply:
        if not task_id:
            return error_reply(422, "query parameter 'taskId' is required")
        with self._lock:
            record = self._tasks.get(task_id)
            if record is None:
                return error_reply(404, "task not found")
            now = self._clock()
            data = record.record_info(now, self._base_url or "")
            due = self._settle(record, now)
        self._dispatch([due])
        return ok_reply(data)

    def _image(self, match: re.Match[str] | None) -> Reply:
        if match is None:
            return error_reply(404, "file not found")
        with self._lock:
            record = self._tasks.get(match["task_id"])
            if record is None:
                return error_reply(404, "file not found")
            now = self._clock()
            succeeded = record.state(now) == "success"
            task_input = record.input
            due = self._settle(record, now)
        self._dispatch([due])
        if not succeeded or int(match["index"]) != 0 or match["ext"].lower() != "png":
            return error_reply(404, "file not found")
        prompt = task_input.get("prompt")
        image = render_image(
            prompt if isinstance(prompt, str) else "",
            task_input.get("seed"),
            task_input.get("aspect_ratio"),
        )
        return Reply(status=200, body=image, content_type="image/png")

    # -- callbacks -----------------------------------------------------------------------

    def _settle(self, record: TaskRecord, now: float) -> _Callback | None:
        """The callback a just-observed terminal task still owes, marking it sent.

        Call with the lock held; pass the result to :meth:`_dispatch` after releasing it.
        """
        if not record.callback_due or record.callback_url is None:
            return None
        if record.terminal(now) is None:
            return None
        record.callback_due = False
        return _Callback(record.callback_url, record.record_info(now, self._base_url or ""))

    def _start_timer(self, delay: float, function: Callable[..., None], *args: object) -> None:
        """Run ``function(*args)`` in a daemon timer that :meth:`stop` cancels (lock held)."""
        if self._stopped:
            return
        self._timers = {timer for timer in self._timers if timer.is_alive()}
        timer = threading.Timer(delay, function, args=args)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _dispatch(self, due: Iterable[_Callback | None]) -> None:
        callbacks = [callback for callback in due if callback is not None]
        if not callbacks:
            return
        with self._lock:
            for callback in callbacks:
                self._start_timer(0.0, self._post_callback, callback)

    def _callback_timer_fired(self, flux_task_id: str) -> None:
        with self._lock:
            record = self._tasks.get(flux_task_id)
            due = self._settle(record, self._clock()) if record is not None else None
        if due is not None:
            self._post_callback(due)

    def _post_callback(self, callback: _Callback) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stats.callbacks_sent += 1
        request = urllib.request.Request(  # noqa: S310 - only loopback http URLs get here
            callback.url,
            data=json.dumps(callback.data).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        # The receiver's failures are the code under test's business, not the fake's.
        with (
            contextlib.suppress(OSError, ValueError, http.client.HTTPException),
            _CALLBACK_OPENER.open(request, timeout=_CALLBACK_TIMEOUT) as response,
        ):
            response.read()


def _checked_duration(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {seconds}")
    return float(seconds)
