"""Requests with a wall-clock bound, and the sync transport that holds it (no Airflow imports).

``httpx.Timeout`` bounds each network read, not a request: a peer dripping one byte at a
time, in the head or in the body, keeps every read within its timeout forever. Async
requests are bounded by cancelling them (:func:`within`). Sync requests cannot be cancelled
from outside, so every network step they take is bounded instead: :func:`request_deadline`
holds an absolute deadline in a context variable, and :class:`DeadlineBackend` gives each
connect, TLS handshake, read and write at most the time left to it (or its own timeout if
shorter). :class:`BoundedTransport` is httpx's transport over httpcore pools built on that
backend; it honours the environment's proxies (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``, ``NO_PROXY``) as httpx does.

The backend may also be given ``addresses``: the host name's addresses to connect to, each
checked by the caller. The connection then goes to a checked address, never to one a second
name lookup could return (the TLS server name and the ``Host`` header stay the URL's name).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx

from flux_provider.api.formatting import seconds_text

_T = TypeVar("_T")

_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}

WRITE_STEP = 64 * 1024
"""Bytes written per bounded step (a request body larger than this is written in steps)."""


@contextmanager
def httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as the matching httpx ones (the most specific class)."""
    try:
        yield
    except Exception as exc:
        for cls in type(exc).__mro__:
            if cls in _ERRORS:
                raise _ERRORS[cls](str(exc)) from exc
        raise


# -- deadlines -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock, and the limit it came from."""

    at: float
    seconds: float

    def left(self) -> float:
        """Seconds until the deadline (negative once it has passed)."""
        return self.at - time.monotonic()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.left() <= 0

    def describe(self) -> str:
        """What ran out, for error messages."""
        return f"no complete answer within the {seconds_text(self.seconds)} limit"


_DEADLINE: ContextVar[Deadline | None] = ContextVar("flux_request_deadline", default=None)


def core_request_of(request: httpx.Request) -> httpcore.Request:
    """``request`` as httpcore sends it (what httpx's own transports do before sending)."""
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


@contextmanager
def request_deadline(seconds: float) -> Iterator[Deadline]:
    """Bound every network step taken in the block (sync, on this thread) to ``seconds`` in all.

    An enclosing deadline that comes sooner stays in force.
    """
    deadline = Deadline(time.monotonic() + seconds, seconds)
    outer = _DEADLINE.get()
    if outer is not None and outer.at < deadline.at:
        deadline = outer
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` shortened to the time left to the current deadline; raise once it passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline.left()
    if left <= 0:
        raise expired(deadline.describe())
    return left if timeout is None else min(timeout, left)


async def within(seconds: float | None, work: Awaitable[_T]) -> _T:
    """``await work``, cancelled once ``seconds`` have passed (``None``: no bound).

    Never swallows a cancellation of the caller, which ``asyncio.wait_for`` does before
    Python 3.12 when the work ends just as the caller is cancelled (a trigger the
    triggerer removes would then go on running).

    Raises:
        asyncio.TimeoutError: the bound passed (the work was cancelled and has ended).
    """
    if seconds is None:
        return await work
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await work
    return await within_by_timer(seconds, work)  # pragma: no cover - Python 3.10


async def within_by_timer(seconds: float, work: Awaitable[_T]) -> _T:
    """:func:`within` for Python 3.10, which has no ``asyncio.timeout``: a timer cancels the work.

    The caller awaits the work itself, so its own cancellation reaches the work and is
    raised even when the work has just ended.
    """
    inner = asyncio.ensure_future(work)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        inner.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await inner
    except asyncio.CancelledError:
        if expired and inner.cancelled():
            raise asyncio.TimeoutError from None
        raise
    finally:
        timer.cancel()


# -- the network backend -------------------------------------------------------------------

Addresses = Callable[[str], Sequence[str]]
"""A host name to the addresses a connection to it may use, each already checked."""


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every step is bounded by the current deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), WRITE_STEP):
            step = buffer[start : start + WRITE_STEP]
            self._inner.write(step, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, every step bounded by :func:`request_deadline`.

    :param addresses: if given, a host name's checked addresses: connections go to the first
        of them that answers, never to the name itself (so no second lookup is made).
    """

    def __init__(
        self, addresses: Addresses | None = None, inner: httpcore.NetworkBackend | None = None
    ) -> None:
        self._addresses = addresses
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        targets = [host] if self._addresses is None else list(self._addresses(host))
        failure: httpcore.ConnectError | None = None
        for target in targets:
            bounded = _bounded(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(
                    target, port, bounded, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return _DeadlineStream(stream)
        raise failure or httpcore.ConnectError(f"{host!r} has no address to connect to")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# -- the sync transport --------------------------------------------------------------------


def environment_proxies() -> dict[str, str]:
    """The proxies the environment names, by scheme (``http``, ``https``, ``all``, ``no``)."""
    proxies: dict[str, str] = {}
    for scheme, address in urllib.request.getproxies().items():
        if scheme == "no":
            proxies[scheme] = address
        elif scheme in ("http", "https", "all") and address:
            proxies[scheme] = address if "://" in address else f"http://{address}"
    return proxies


def bypasses_proxy(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY``'s value ``no_proxy`` exempts ``host`` (a name, a suffix, ``*``)."""
    host = host.lower().strip("[]")
    for entry in no_proxy.split(","):
        name = entry.strip().lower()
        if name == "*":
            return True
        if "://" in name:
            name = urlsplit(name).hostname or ""
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]  # host:port
        name = name.strip("[]").lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class BoundedTransport(httpx.BaseTransport):
    """httpx's sync transport over httpcore pools whose every step respects the deadline.

    Requests go directly (to ``addresses`` if given, see :class:`DeadlineBackend`), or through
    the environment's proxy for their scheme unless ``NO_PROXY`` exempts their host. The proxy
    connection is bounded the same way; its address is not checked (``addresses`` applies to
    direct connections only: through a proxy it is the proxy that connects).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        keepalive_expiry: float,
        addresses: Addresses | None = None,
    ) -> None:
        limits = _Limits(ssl_context, max_connections, keepalive_expiry)
        self._direct = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=DeadlineBackend(addresses),
        )
        proxies = environment_proxies()
        self._no_proxy = proxies.pop("no", "")
        self._proxies = {
            scheme: _proxy_pool(httpx.Proxy(url), limits) for scheme, url in proxies.items()
        }

    def _pool_for(self, url: httpx.URL) -> httpcore.ConnectionPool:
        pool = self._proxies.get(url.scheme) or self._proxies.get("all")
        if pool is None or bypasses_proxy(url.host, self._no_proxy):
            return self._direct
        return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on the pool its URL goes through."""
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = core_request_of(request)
        with httpx_errors():
            response = self._pool_for(request.url).handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        """Close every pool's connections."""
        self._direct.close()
        for pool in self._proxies.values():
            pool.close()


@dataclass(frozen=True)
class _Limits:
    ssl_context: ssl.SSLContext
    max_connections: int
    keepalive_expiry: float


def _proxy_pool(proxy: httpx.Proxy, limits: _Limits) -> httpcore.ConnectionPool:
    """A pool through ``proxy`` (http, https or socks5), as httpx's own transport builds it."""
    url = httpcore.URL(
        scheme=proxy.url.raw_scheme,
        host=proxy.url.raw_host,
        port=proxy.url.port,
        target=proxy.url.raw_path,
    )
    if proxy.url.scheme in ("socks5", "socks5h"):
        return httpcore.SOCKSProxy(
            proxy_url=url,
            proxy_auth=proxy.raw_auth,
            ssl_context=limits.ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=DeadlineBackend(),
        )
    if proxy.url.scheme not in ("http", "https"):
        raise ValueError(f"unsupported proxy scheme {proxy.url.scheme!r} in the environment")
    return httpcore.HTTPProxy(
        proxy_url=url,
        proxy_auth=proxy.raw_auth,
        proxy_headers=proxy.headers.raw,
        ssl_context=limits.ssl_context,
        proxy_ssl_context=proxy.ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=DeadlineBackend(),
    )
