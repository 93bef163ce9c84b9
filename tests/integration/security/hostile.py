"""A purpose-built hostile HTTP server on 127.0.0.1 for the security tests (stdlib only).

Each route answers with a scripted :class:`Answer`: any status, headers and
framing (exact ``Content-Length``, a lying one, none and close-delimited, or
chunked), with an optional filler streamed between a prefix and a suffix so a
50 MB body never exists in memory, and optionally dripped one byte at a time
(the head or the body) to outlive per-read timeouts. Every write is bounded (the answer's own
size) and the socket has a small send buffer and a write timeout, so the
number of bytes the server managed to send tells how much the client read
before it hung up. Requests are recorded unredacted: tests use them to prove
which headers (the key) reached which host.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Literal
from urllib.parse import urlsplit

from flux_provider.api.config import (
    DEFAULT_BALANCE_PATH,
    DEFAULT_CREATE_PATH,
    DEFAULT_ESTIMATE_PATH,
    DEFAULT_INFO_PATH,
)
from flux_provider.testing.lifecycle import StartStop

CREATE_PATH = DEFAULT_CREATE_PATH
POLL_PATH = DEFAULT_INFO_PATH
BALANCE_PATH = DEFAULT_BALANCE_PATH
ESTIMATE_PATH = DEFAULT_ESTIMATE_PATH
WRITE_CHUNK = 64 * 1024
SEND_BUFFER = 64 * 1024
WRITE_TIMEOUT = 10.0

Framing = Literal["length", "close", "chunked"]
Dripped = Literal["head", "body"]


@dataclass(frozen=True)
class Answer:
    """One scripted HTTP answer: ``prefix + filler + suffix`` with the given framing.

    ``declared_length`` replaces the true ``Content-Length`` (a lie, or a 50 MB
    promise); ``framing="close"`` sends no length and ends by closing.
    """

    status: int = 200
    prefix: bytes = b""
    filler: int = 0
    filler_byte: bytes = b" "
    suffix: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    framing: Framing = "length"
    declared_length: int | None = None
    drip: float = 0.0
    """Seconds between single bytes of the ``dripped`` part (0: sent at once)."""
    dripped: Dripped = "body"

    @property
    def size(self) -> int:
        """The body's true size in bytes."""
        return len(self.prefix) + self.filler + len(self.suffix)

    def pieces(self) -> Any:
        """The body in bounded chunks."""
        if self.prefix:
            yield self.prefix
        remaining = self.filler
        block = self.filler_byte * WRITE_CHUNK
        while remaining > 0:
            piece = block[: min(remaining, WRITE_CHUNK)]
            remaining -= len(piece)
            yield piece
        if self.suffix:
            yield self.suffix


def json_answer(payload: Any, *, status: int = 200, **options: Any) -> Answer:
    """An answer whose body is ``payload`` as JSON."""
    return Answer(status=status, prefix=json.dumps(payload).encode(), **options)


def envelope(data: Any, *, code: Any = 200, message: Any = "success") -> dict[str, Any]:
    """The API's ``{"code", "message", "data"}`` answer object."""
    return {"code": code, "message": message, "data": data}


def success_result(urls: list[str]) -> dict[str, Any]:
    """The ``result`` object of a task that ended in ``success``."""
    return {"code": 200, "message": "success", "media_urls": urls}


def task_data(
    flux_task_id: str = "task_hostile_1",
    *,
    status: Any = "success",
    media_urls: list[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A ``TaskInfo`` ``data`` object as Crun documents it, ended unless ``status`` says not.

    ``result`` holds ``media_urls`` on success and ``null`` otherwise; any field,
    ``result`` included, can be replaced through ``overrides``.
    """
    ended = status in ("success", "failed")
    data: dict[str, Any] = {
        "task_id": flux_task_id,
        "provider": "Black Forest Labs",
        "model_version": "flux-2-max",
        "status": status,
        "param": {
            "model": "flux-2-max",
            "callback_url": None,
            "input": {"prompt": "a fox in the snow"},
        },
        "create_at": 1_700_000_000,
        "result": success_result(media_urls or []) if status == "success" else None,
        "duration_s": 1.5 if ended else None,
        "complete_at": 1_700_000_002 if ended else None,
        "credits": 6 if ended else None,
        "source": "api",
    }
    data.update(overrides)
    return data


@dataclass(frozen=True)
class Seen:
    """One request as the hostile server received it (headers lower-cased, unredacted)."""

    method: str
    path: str
    target: str
    headers: Mapping[str, str]
    body: bytes


Route = Answer | Callable[[Seen], Answer]


@dataclass
class _State:
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    connections: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)
    stopping: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, state: _State, tls: ssl.SSLContext | None) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            # The handshake runs on accept; a client that refuses it is dropped (an OSError).
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def server_bind(self) -> None:
        # Skip HTTPServer's FQDN lookup: no DNS for a loopback test server.
        TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.socket.getsockname()[1])

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Count every accepted connection (whether or not a request comes on it)."""
        with self.state.lock:
            self.state.connections += 1
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-answer is the point of these tests, not an error."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Hostile/1.0"

    def setup(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.request.settimeout(WRITE_TIMEOUT)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    @property
    def _state(self) -> _State:
        server = self.server
        assert isinstance(server, _Server)
        return server.state

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1 << 20))
        path = urlsplit(self.path).path
        seen = Seen(
            method=self.command,
            path=path,
            target=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        with self._state.lock:
            self._state.seen.append(seen)
            self._state.lock.notify_all()
            route = self._state.routes.get(path)
        if route is None:
            answer = json_answer(envelope(None, code=404, message="not found"), status=404)
        else:
            answer = route(seen) if callable(route) else route
        self._answer(answer)

    def _answer(self, answer: Answer) -> None:
        sent = 0
        try:
            if answer.drip and answer.dripped == "head":
                self._drip(self._head(answer), answer.drip)
            else:
                self.wfile.write(self._head(answer))
            if answer.framing == "close":
                self.close_connection = True
            for piece in answer.pieces():
                if answer.framing == "chunked":
                    piece = b"%x\r\n%s\r\n" % (len(piece), piece)
                if answer.drip and answer.dripped == "body":
                    sent += self._drip(piece, answer.drip)
                else:
                    self.wfile.write(piece)
                    sent += len(piece)
            if answer.framing == "chunked":
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client hung up (what a capped reader does) or the write timed out
            self.close_connection = True
        finally:
            with self._state.lock:
                self._state.sent.append(sent)
                self._state.lock.notify_all()

    def _head(self, answer: Answer) -> bytes:
        """The status line and headers of ``answer``."""
        lines = [f"HTTP/1.1 {answer.status} {self.responses.get(answer.status, ('',))[0]}"]
        lines.append(f"Server: {self.server_version}")
        if answer.content_type is not None:
            lines.append(f"Content-Type: {answer.content_type}")
        lines.extend(f"{name}: {value}" for name, value in answer.headers)
        if answer.framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        elif answer.framing == "length" or answer.declared_length is not None:
            declared = answer.size if answer.declared_length is None else answer.declared_length
            lines.append(f"Content-Length: {declared}")
        if answer.framing == "close":
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _drip(self, data: bytes, every: float) -> int:
        """Send ``data`` one byte at a time, ``every`` seconds apart; the bytes sent."""
        sent = 0
        for byte in _bytes_of(data):
            if self._state.stopping.wait(every):
                raise OSError("the server is stopping")
            self.wfile.write(byte)
            self.wfile.flush()
            sent += 1
        return sent


def _bytes_of(data: bytes) -> Iterator[bytes]:
    for index in range(len(data)):
        yield data[index : index + 1]


class HostileServer(StartStop):
    """A scripted HTTP server on ``127.0.0.1``; use as a context manager.

    ``routes`` maps a path (no query) to an :class:`Answer` or a function of
    the request returning one; other paths answer 404. With ``tls`` (a server
    context) it speaks HTTPS.
    """

    def __init__(
        self, routes: Mapping[str, Route] | None = None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self._state = _State(routes=dict(routes or {}))
        self._tls = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HostileServer:
        """Bind a free port and serve in a daemon thread."""
        self._server = _Server(self._state, self._tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="hostile-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (a dripping answer ends too)."""
        self._state.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "not started"
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https`` with TLS)."""
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        return f"{self.base_url}{path}"

    def route(self, path: str, answer: Route) -> None:
        """Set (or replace) the answer of ``path``."""
        with self._state.lock:
            self._state.routes[path] = answer

    @property
    def seen(self) -> list[Seen]:
        """Every request received so far, in order."""
        with self._state.lock:
            return list(self._state.seen)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        with self._state.lock:
            return self._state.connections

    @property
    def bytes_sent(self) -> int:
        """Body bytes the server managed to write, over all answers."""
        with self._state.lock:
            return sum(self._state.sent)

    def wait_requests(self, count: int, timeout: float = 15.0) -> None:
        """Block until ``count`` requests have been received.

        Raises:
            TimeoutError: Fewer requests came within ``timeout`` seconds.
        """
        with self._state.lock:
            if not self._state.lock.wait_for(lambda: len(self._state.seen) >= count, timeout):
                raise TimeoutError(f"{len(self._state.seen)} of {count} requests received")

    def wait_answers(self, count: int, timeout: float = 15.0) -> int:
        """Block until ``count`` answers have ended (written whole or cut off); bytes sent.

        Raises:
            TimeoutError: Fewer answers ended within ``timeout`` seconds.
        """
        with self._state.lock:
            if not self._state.lock.wait_for(lambda: len(self._state.sent) >= count, timeout):
                raise TimeoutError(f"{len(self._state.sent)} of {count} answers ended")
            return sum(self._state.sent)

    def connection_json(self, api_key: str, **extra: Any) -> str:
        """An ``AIRFLOW_CONN_*`` value pointing a flux connection at this server."""
        connection: dict[str, Any] = {"conn_type": "flux", "host": self.base_url}
        connection["password"] = api_key
        if extra:
            connection["extra"] = extra
        return json.dumps(connection)


ENDPOINTS = {
    "create": CREATE_PATH,
    "poll": POLL_PATH,
    "balance": BALANCE_PATH,
    "estimate": ESTIMATE_PATH,
}
"""Each API endpoint a client calls, by the name the tests give it."""


def call_endpoint(flux: Any, endpoint: str, *, task_id: str, prompt: Any) -> Any:
    """Call ``endpoint`` with ``flux`` (a sync client: its answer; an async one: its awaitable)."""
    calls: dict[str, Callable[[], Any]] = {
        "create": lambda: flux.create_task(prompt),
        "poll": lambda: flux.get_task(task_id),
        "balance": flux.get_balance,
        "estimate": lambda: flux.estimate_credits(prompt),
    }
    return calls[endpoint]()
