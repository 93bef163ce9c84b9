"""One shared async client per client configuration and event loop (no Airflow imports).

A triggerer runs hundreds of waits in one event loop. Each leasing its own
:class:`~flux_provider.api.client.AsyncFluxClient` would hold one TCP connection
and file descriptor per wait; :class:`ClientRegistry` hands every lease of the
same :class:`~flux_provider.api.config.ClientConfig` on the same loop the same
client instead, whose pool holds at most
:data:`~flux_provider.api.config.MAX_CONNECTIONS` connections (more requests queue).

The key is the whole configuration, API key included: a connection whose key,
host, path, header or timeout changed gets a new client, while leases of the
old one keep theirs until they end. Leases are counted; the last one to end
closes the client. A lease that ends by cancellation or error leaves the
client to the others (httpx drops a connection whose request was cancelled).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from flux_provider.api.client import AsyncFluxClient
from flux_provider.api.config import (
    KEEPALIVE_EXPIRY,
    MAX_CONNECTIONS,
    ClientConfig,
    shared_ssl_context,
)
from flux_provider.api.lanes import LaneTransport

ClientFactory = Callable[[ClientConfig], AsyncFluxClient]


def shared_client(config: ClientConfig) -> AsyncFluxClient:
    """A client for many concurrent waits: up to ``MAX_CONNECTIONS`` one-connection lanes.

    See :mod:`flux_provider.api.lanes` for why not one pool of ``MAX_CONNECTIONS`` connections.
    """
    transport = LaneTransport(
        MAX_CONNECTIONS, ssl_context=shared_ssl_context(), keepalive_expiry=KEEPALIVE_EXPIRY
    )
    return AsyncFluxClient(config, transport=transport)


@dataclass
class _Shared:
    client: AsyncFluxClient
    leases: int = 0


class ClientRegistry:
    """Reference-counted async clients, one per (:class:`ClientConfig`, running event loop).

    Building a client does no I/O, so the first leases of a configuration,
    however many start together, find the one client the first of them built.

    :param factory: builds a client for a configuration (:func:`shared_client` by default).
        Building one needs the TLS context: async callers warm
        :func:`~flux_provider.api.config.shared_ssl_context` up in a thread first.

    :ivar built: clients built so far.
    """

    def __init__(self, factory: ClientFactory = shared_client) -> None:
        self._factory = factory
        self.built = 0
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[ClientConfig, _Shared]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(clients={self.client_count()})"

    def client_count(self) -> int:
        """Clients currently shared, over every event loop."""
        with self._lock:
            return sum(len(clients) for clients in self._loops.values())

    def lease_count(self, config: ClientConfig) -> int:
        """Leases currently held on the running loop's client for ``config`` (0 if none)."""
        with self._lock:
            shared = self._loops.get(asyncio.get_running_loop(), {}).get(config)
            return shared.leases if shared is not None else 0

    @asynccontextmanager
    async def lease(self, config: ClientConfig) -> AsyncIterator[AsyncFluxClient]:
        """The shared client of ``config`` on the running loop, for the ``async with`` block."""
        loop = asyncio.get_running_loop()
        with self._lock:
            clients = self._loops.setdefault(loop, {})
            shared = clients.get(config)
            if shared is None or shared.client.is_closed:
                shared = clients[config] = _Shared(self._factory(config))
                self.built += 1
            shared.leases += 1
        try:
            yield shared.client
        finally:
            with self._lock:
                shared.leases -= 1
                last = shared.leases == 0
                if last and clients.get(config) is shared:
                    del clients[config]
            if last:
                # Shielded: a second cancellation of this lease must not leave sockets open.
                await asyncio.shield(shared.client.aclose())


shared_clients = ClientRegistry()
"""The process's registry: every trigger (through ``FluxHook.async_client``) leases from it."""
