"""The shared client's transport: a bounded set of one-connection lanes (no Airflow imports).

httpcore's connection pool re-examines every connection and every queued request each time a
request starts or ends: idle connections are checked against each other (quadratic) and for a
server-side close (a system call each). One pool holding tens of connections for hundreds of
triggers thus costs milliseconds of CPU per poll, and more the busier the event loop gets.

:class:`LaneTransport` keeps up to ``max_lanes`` lanes of one HTTP/1.1 connection each
(``httpcore.AsyncHTTPConnection``, no pool around it). A request takes the most recently freed
lane (so a light load keeps few connections open), or opens a new lane while there are fewer
than ``max_lanes``, or waits its turn (first come, first served); it keeps the lane until its
response is closed. Each step is O(1). Errors are httpx's, as with httpx's own transport.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable

import httpcore
import httpx

from flux_provider.api.network import core_request_of, httpx_errors, within


class _Lane:
    """One connection at a time to one origin, replaced once closed, expired or failed."""

    def __init__(self, ssl_context: ssl.SSLContext, keepalive_expiry: float) -> None:
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._connection: httpcore.AsyncHTTPConnection | None = None

    async def connection(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        """A connection ready for a request to ``origin`` (connected on first use)."""
        current = self._connection
        if current is not None and (
            current.is_closed() or current.has_expired() or not current.can_handle_request(origin)
        ):
            self._connection = None
            await current.aclose()
        if self._connection is None:
            self._connection = httpcore.AsyncHTTPConnection(
                origin=origin,
                ssl_context=self._ssl_context,
                keepalive_expiry=self._keepalive_expiry,
            )
        return self._connection

    async def send(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request``; on a connection that turns out unusable, once more on a new one."""
        connection = await self.connection(request.url.origin)
        try:
            return await connection.handle_async_request(request)
        except httpcore.ConnectionNotAvailable:
            await self.aclose()
            return await (await self.connection(request.url.origin)).handle_async_request(request)

    async def aclose(self) -> None:
        """Close the connection, if any."""
        current, self._connection = self._connection, None
        if current is not None:
            await current.aclose()


class _Body(httpx.AsyncByteStream):
    """A response body that frees its lane when it is closed."""

    def __init__(self, stream: AsyncIterable[bytes], release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        release, self._release = self._release, None
        try:
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()
        finally:
            if release is not None:
                release()


class LaneTransport(httpx.AsyncBaseTransport):
    """Up to ``max_lanes`` one-connection lanes, each serving one request at a time.

    :param max_lanes: the most connections open at once; further requests wait for a lane
        (up to the request's pool timeout, then ``httpx.PoolTimeout``).
    :param ssl_context: the TLS context of ``https`` connections.
    :param keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(
        self, max_lanes: int, *, ssl_context: ssl.SSLContext, keepalive_expiry: float
    ) -> None:
        if max_lanes < 1:
            raise ValueError(f"max_lanes must be >= 1, got {max_lanes}")
        self._max_lanes = max_lanes
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._lanes: list[_Lane] = []
        self._free: list[_Lane] = []
        self._waiters: deque[asyncio.Future[_Lane]] = deque()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lanes={len(self._lanes)}/{self._max_lanes})"

    @property
    def lanes(self) -> int:
        """Lanes opened so far (at most ``max_lanes``)."""
        return len(self._lanes)

    async def _take(self, timeout: float | None) -> _Lane:
        if self._free:
            return self._free.pop()
        if len(self._lanes) < self._max_lanes:
            lane = _Lane(self._ssl_context, self._keepalive_expiry)
            self._lanes.append(lane)
            return lane
        waiter: asyncio.Future[_Lane] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # Shielded, so that a lane handed over just as the wait ends is not lost.
            return await within(timeout, asyncio.shield(waiter))
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._give_back(waiter.result())
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
            if isinstance(exc, asyncio.TimeoutError):
                raise httpx.PoolTimeout(f"no free connection within {timeout}s") from None
            raise

    def _give_back(self, lane: _Lane) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(lane)
                return
        self._free.append(lane)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a free lane; the lane is freed when the response is closed."""
        timeouts = request.extensions.get("timeout") or {}
        lane = await self._take(timeouts.get("pool"))
        try:
            assert isinstance(request.stream, AsyncIterable)
            core_request = core_request_of(request)
            with httpx_errors():
                response = await lane.send(core_request)
        except BaseException:
            self._give_back(lane)
            raise
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, lambda: self._give_back(lane)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every lane's connection."""
        lanes, self._lanes, self._free = self._lanes, [], []
        for lane in lanes:
            await lane.aclose()
