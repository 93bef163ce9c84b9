"""The fake task API: :class:`FakeFluxServer`."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from .account import DEFAULT_BALANCE, DEFAULT_CREDITS_PER_IMAGE, Account
from .faults import Fault
from .httpd import LoopbackHTTPServer, make_http_server
from .inflight import DEFAULT_RETRY_AFTER, InFlight, checked_limit, checked_retry_after
from .lifecycle import StartStop, require_started
from .responder import ApiResponder
from .shapes import FailureShape, FakeTaskStatus, ResultShape, WireStyle
from .state import ServerState
from .stats import FakeStats
from .tasks import SUCCESS, Ending, FakeTask
from .wire import MESSAGE_KEYS, MODEL, MessageKey, validated_input

__all__ = ["FakeFluxServer"]

_SERVE_POLL_INTERVAL = 0.01  # bounds how long stop() waits for serve_forever to notice
_JOIN_TIMEOUT = 5.0
_NOT_STARTED = "FakeFluxServer is not started; call start() or use `with`"


def _style_option(name: str, doc: str) -> Any:
    """A settable server attribute that reads and replaces one field of the server's
    :class:`WireStyle` (under its lock)."""

    def read(server: FakeFluxServer) -> Any:
        return getattr(server._style(), name)

    def write(server: FakeFluxServer, value: Any) -> None:
        server._restyle(**{name: value})

    return property(read, write, doc=doc)


class FakeFluxServer(StartStop):
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
    * With ``max_in_flight``, a create while that many API-created tasks have not ended is
      answered 429 with a ``Retry-After`` header, like the service's per-account limit (Black
      Forest Labs documents 24); nothing is created or charged.
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
        max_in_flight: int | None = None,
        rate_limit_retry_after: float = DEFAULT_RETRY_AFTER,
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
            max_in_flight: The most tasks created through ``CreateTask`` that may be in flight
                (created and not ended, by the clock or by :meth:`complete`/:meth:`fail`); a
                create beyond it is answered 429 (body ``code`` 429) and creates and charges
                nothing. ``None``: no limit. Tasks made by :meth:`submit` do not count.
            rate_limit_retry_after: Seconds sent in the ``Retry-After`` header of that 429.

        Raises:
            ValueError: If an option has a value outside the ones listed.
        """
        if message_key not in MESSAGE_KEYS:
            raise ValueError(f"message_key must be one of {MESSAGE_KEYS}, got {message_key!r}")
        self._api_key = api_key
        self._host = host
        self._requested_port = port
        self._auth_header = auth_header
        self.verbose = verbose
        """Whether each request is logged to stderr."""
        self._message_key: MessageKey = message_key
        self._state = ServerState(
            duration=_checked_seconds("duration", duration),
            clock=clock,
            style=WireStyle(status_words or {}, result_shape, failure_shape),
            account=Account(balance=balance, credits_per_image=credits_per_image),
            in_flight=InFlight(limit=max_in_flight, retry_after=rate_limit_retry_after),
            message_key=message_key,
            callback_envelope=callback_envelope,
        )
        self._responder = ApiResponder(
            self._state,
            api_key=api_key,
            auth_header=auth_header,
            message_key=message_key,
            estimate_endpoint=estimate_endpoint,
        )
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeFluxServer:
        """Bind the socket and serve in a daemon thread; does nothing if already running.

        Returns:
            The server itself, for chaining.

        Raises:
            RuntimeError: If the server was stopped (create a new one instead).
            OSError: If the address cannot be bound.
        """
        with self._state.lock:
            if self._state.stopped:
                raise RuntimeError("a stopped FakeFluxServer cannot be restarted")
            if self._httpd is not None:
                return self
            httpd = make_http_server(
                self._host,
                self._requested_port,
                self._responder,
                message_key=self._message_key,
                verbose=lambda: self.verbose,
            )
            self._port = int(httpd.server_port)
            url_host = f"[{self._host}]" if ":" in self._host else self._host
            self._state.base_url = f"http://{url_host}:{self._port}"
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
        with self._state.lock:
            httpd, thread = self._httpd, self._thread
            if httpd is None or self._state.stopped:
                return
            self._state.stopped = True
        self._state.cancel_callbacks()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=_JOIN_TIMEOUT)

    # -- configuration -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``, the URL to give the client under test.

        Raises:
            RuntimeError: Before :meth:`start`.
        """
        return require_started(self._state.base_url or None, _NOT_STARTED)

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``).

        Raises:
            RuntimeError: Before :meth:`start`.
        """
        return require_started(self._port, _NOT_STARTED)

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
        with self._state.lock:
            return self._state.duration

    @duration.setter
    def duration(self, seconds: float) -> None:
        checked = _checked_seconds("duration", seconds)
        with self._state.lock:
            self._state.duration = checked

    @property
    def balance(self) -> float:
        """Credits left: the starting balance minus tasks charged plus failures refunded."""
        return self._state.balance()

    @balance.setter
    def balance(self, credits: float) -> None:
        with self._state.lock:
            self._state.account.set_balance(credits, self._state.clock())

    @property
    def max_in_flight(self) -> int | None:
        """The most API-created tasks in flight at once (``None``: no limit).

        Changing it applies to the next create; tasks already in flight are left to end.
        """
        with self._state.lock:
            return self._state.in_flight.limit

    @max_in_flight.setter
    def max_in_flight(self, limit: int | None) -> None:
        checked = checked_limit(limit)
        with self._state.lock:
            self._state.in_flight.limit = checked

    @property
    def rate_limit_retry_after(self) -> float:
        """Seconds in the ``Retry-After`` header of a create refused for ``max_in_flight``."""
        with self._state.lock:
            return self._state.in_flight.retry_after

    @rate_limit_retry_after.setter
    def rate_limit_retry_after(self, seconds: float) -> None:
        checked = checked_retry_after(seconds)
        with self._state.lock:
            self._state.in_flight.retry_after = checked

    @property
    def in_flight(self) -> int:
        """Tasks created through ``CreateTask`` that have not ended yet."""
        with self._state.lock:
            return self._state.in_flight.count(self._state.clock())

    @property
    def credits_per_image(self) -> float:
        """What a 1K task costs (a 2K one costs double)."""
        return self._state.account.credits_per_image

    status_words: Mapping[FakeTaskStatus, str] = _style_option(
        "status_words", "Word sent for each canonical status that is not sent as itself."
    )
    result_shape: ResultShape = _style_option(
        "result_shape", "Where success puts the image URL; changing it affects every later answer."
    )
    failure_shape: FailureShape = _style_option(
        "failure_shape",
        "Where failure puts its code and reason; changing it affects every later answer.",
    )

    def _style(self) -> WireStyle:
        with self._state.lock:
            return self._state.style

    def _restyle(self, **changes: Any) -> None:
        with self._state.lock:
            self._state.style = replace(self._state.style, **changes)

    def disable_key(self) -> None:
        """Answer every authenticated request carrying the right key with 403 "API key disabled"."""
        with self._state.lock:
            self._state.key_disabled = True

    def enable_key(self) -> None:
        """Undo :meth:`disable_key`."""
        with self._state.lock:
            self._state.key_disabled = False

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
        with self._state.lock:
            self._state.faults.add(fault)

    def clear_faults(self) -> None:
        """Drop every queued fault, including ``times=None`` ones."""
        with self._state.lock:
            self._state.faults.clear()

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
        with self._state.lock:
            self._state.planned_failures.extend([ending] * count)

    def complete(self, flux_task_id: str) -> None:
        """Make a running task succeed now.

        Raises:
            KeyError: If the task is unknown.
            ValueError: If the task already failed (completing a succeeded task does nothing).
        """
        self._state.end(flux_task_id, SUCCESS)

    def fail(
        self, flux_task_id: str, *, code: int = 501, message: str = "generation failed"
    ) -> None:
        """Make a running task fail now with ``code`` and ``message``.

        Raises:
            KeyError: If the task is unknown.
            ValueError: If the task already succeeded (failing a failed task does nothing).
        """
        self._state.end(flux_task_id, Ending("failed", code, message))

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
        return self._state.create(
            model=model, input=checked, callback_url=callback_url, via_api=False
        )

    # -- inspection ----------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, FakeTask]:
        """Read-only snapshot of every task, keyed by ``task_id``, in creation order."""
        return MappingProxyType(self._state.snapshots())

    def state_of(self, flux_task_id: str) -> FakeTaskStatus:
        """The task's current canonical status (whatever ``status_words`` sends for it).

        Raises:
            KeyError: If the task is unknown.
        """
        return self._state.status_of(flux_task_id)

    @property
    def stats(self) -> FakeStats:
        """A copy of the request counters and request log."""
        with self._state.lock:
            return replace(self._state.stats, requests=list(self._state.stats.requests))

    def reset_stats(self) -> None:
        """Zero the counters and empty the request log.

        ``peak_in_flight`` starts again from the tasks in flight at the reset.
        """
        self._state.reset_stats()


def _checked_seconds(name: str, seconds: float) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds}")
    return float(seconds)
