"""The fake's HTTP transport: a threading stdlib server that hands each request to a responder."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, cast

from .wire import MessageKey, Reply, error_reply

__all__ = ["IncomingRequest", "LoopbackHTTPServer", "Responder", "make_http_server"]

_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class IncomingRequest:
    """One request as read off the socket."""

    method: str
    target: str  # path and query, as sent
    headers: Message
    body: bytes
    client_port: int


Responder = Callable[[IncomingRequest], Reply | None]
"""Answers a request; ``None`` closes the connection without any answer."""


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so stopping can close them."""

    daemon_threads = True
    # Handlers may sleep in a delay fault or idle on keep-alive; stopping must not wait for them.
    block_on_close = False
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        responder: Responder,
        *,
        message_key: MessageKey,
        verbose: Callable[[], bool],
    ) -> None:
        """Bind ``address``; each request goes to ``responder``."""
        self.responder = responder
        self.message_key: MessageKey = message_key
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without the FQDN lookup ``HTTPServer`` does (a DNS query the fake doesn't need)."""
        TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Remember the connection, then serve it in a thread."""
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        """Forget the connection, then close it."""
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
        """Ignore clients vanishing mid-answer (or a stop closing their socket)."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _LoopbackHTTPServerV6(LoopbackHTTPServer):
    address_family = socket.AF_INET6


def make_http_server(
    host: str,
    port: int,
    responder: Responder,
    *,
    message_key: MessageKey,
    verbose: Callable[[], bool],
) -> LoopbackHTTPServer:
    """Bind an IPv4 or IPv6 (``host`` containing ``:``) server on ``host:port``."""
    server_class = _LoopbackHTTPServerV6 if ":" in host else LoopbackHTTPServer
    return server_class((host, port), responder, message_key=message_key, verbose=verbose)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeFluxAPI/2.0"
    # Buffer each answer so headers and body leave in one write (http.server flushes after
    # every request), and disable Nagle so no answer waits on the client's delayed ACK.
    wbufsize = -1
    disable_nagle_algorithm = True

    @property
    def _server(self) -> LoopbackHTTPServer:
        return cast(LoopbackHTTPServer, self.server)

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
        if self._server.verbose():
            super().log_message(format, *args)

    def _refuse(self, status: int, message: str) -> None:
        key = self._server.message_key
        self._send(error_reply(status, message, close=True, message_key=key))

    def _read_body(self) -> bytes | None:
        """The request body, or ``None`` after answering a body we cannot read."""
        if self.headers.get("Transfer-Encoding", "identity").lower() != "identity":
            self._refuse(411, "send the body with a Content-Length")
            return None
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b""
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(400, "invalid Content-Length")
            return None
        if length > _MAX_BODY_BYTES:
            self._refuse(413, "request body too large")
            return None
        return self.rfile.read(length)

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        request = IncomingRequest(
            method=self.command,
            target=self.path,
            headers=self.headers,
            body=body,
            client_port=int(self.client_address[1]),
        )
        reply = self._server.responder(request)
        if reply is None:
            self.close_connection = True
            return
        self._send(reply)

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
