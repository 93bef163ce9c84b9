"""What async hook code does once per event loop: warm-up off the loop, shared connection reads.

A triggerer runs every trigger on one event loop; anything slow done on it (building the TLS
context, lazy imports, a connection read per trigger) stalls them all.
"""

from __future__ import annotations

import asyncio
import importlib
import weakref
from collections.abc import Awaitable, Callable
from functools import partial

from flux_provider.api.config import ClientConfig, shared_ssl_context

_LAZY_MODULES = (
    "anyio._backends._asyncio",
    "asgiref.sync",
    "airflow.sdk.execution_time.cache",
    "airflow.sdk.execution_time.supervisor",
)
_warm_ups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[None]] = (
    weakref.WeakKeyDictionary()
)
ReadKey = tuple[type, str]
"""What identifies one connection's reads: the hook class and the connection id."""
_config_reads: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[ReadKey, asyncio.Task[ClientConfig]]
] = weakref.WeakKeyDictionary()


def _prepare_async_io() -> None:
    """The slow first-use work of async I/O: the TLS context and lazily imported modules.

    The modules are private to Airflow and anyio: one that a release renames or
    removes is skipped (the warm-up only saves time, nothing depends on it).
    """
    shared_ssl_context()
    for module in _LAZY_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            continue


async def async_io_ready() -> None:
    """Run :func:`_prepare_async_io` once per event loop, in a worker thread.

    Done on the loop, it would block it for ~100 ms (TLS context ~35 ms,
    imports ~70 ms), stalling every trigger in the triggerer. Concurrent
    callers share one thread instead of each starting its own.
    """
    loop = asyncio.get_running_loop()
    ready = _warm_ups.get(loop)
    if ready is None:
        ready = _warm_ups[loop] = loop.run_in_executor(None, _prepare_async_io)
    # Shielded: a cancelled caller (a trigger the triggerer removes) must not cancel the
    # warm-up the other callers, and every later one on this loop, wait for.
    await asyncio.shield(ready)


async def shared_config_read(
    key: ReadKey, read_config: Callable[[], Awaitable[ClientConfig]]
) -> ClientConfig:
    """``read_config()``, one read shared by the calls for the same ``key`` that overlap it.

    Triggers that start together would each read the connection (about a millisecond of CPU
    in Airflow's secrets lookup); those that ask while a read is under way take its answer,
    which is no older than their own read would be. Nothing is kept once the read ends.
    """
    loop = asyncio.get_running_loop()
    reads = _config_reads.setdefault(loop, {})
    read = reads.get(key)
    if read is None:
        read = reads[key] = loop.create_task(_awaited(read_config))
        read.add_done_callback(partial(_read_done, reads, key))
    # Shielded: one caller's cancellation must not cancel the read the others wait for.
    return await asyncio.shield(read)


async def _awaited(read_config: Callable[[], Awaitable[ClientConfig]]) -> ClientConfig:
    return await read_config()


def _read_done(
    reads: dict[ReadKey, asyncio.Task[ClientConfig]],
    key: ReadKey,
    read: asyncio.Task[ClientConfig],
) -> None:
    if reads.get(key) is read:
        del reads[key]
    if not read.cancelled():
        read.exception()  # retrieved: a read whose callers all went away is no error
