"""``FluxHook``: an Airflow Connection turned into a configured API client.

The connection (type ``flux``) holds the API key as its password and the API
base URL as its host (empty means ``https://api.crun.ai``); optional extras
name the auth header, the endpoint paths, the request timeout and the
plain-http opt-in. Worker code uses the sync client; trigger code uses the
async one, whose connection is read with ``get_async_connection`` so the
triggerer's event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import importlib
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import cached_property, partial
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from flux_provider import get_provider_info
from flux_provider.api.client import AsyncFluxClient, FluxClient, TaskInput
from flux_provider.api.config import (
    DEFAULT_AUTH_HEADER,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    PATH_FIELDS,
    ClientConfig,
    is_loopback_host,
    shared_ssl_context,
)
from flux_provider.api.errors import ConnectionConfigError, FluxError
from flux_provider.api.formatting import credits_text
from flux_provider.api.models import MODEL_NAME, TaskInfo
from flux_provider.api.pool import shared_clients
from flux_provider.hooks.version_compat import (
    connection_form_widgets,
    get_async_connection,
    get_async_extra_dejson,
)

_LAZY_MODULES = (
    "anyio._backends._asyncio",
    "asgiref.sync",
    "airflow.sdk.execution_time.cache",
    "airflow.sdk.execution_time.supervisor",
)
_warm_ups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[None]] = (
    weakref.WeakKeyDictionary()
)
_config_reads: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[type, str], asyncio.Task[ClientConfig]]
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


async def _read_config(hook: FluxHook) -> ClientConfig:
    """``hook.aget_config()``, one read shared by the calls for the same connection it overlaps.

    Triggers that start together would each read the connection (about a millisecond of CPU
    in Airflow's secrets lookup); those that ask while a read is under way take its answer,
    which is no older than their own read would be. Nothing is kept once the read ends.
    """
    loop = asyncio.get_running_loop()
    reads = _config_reads.setdefault(loop, {})
    key = (type(hook), hook.flux_conn_id)
    read = reads.get(key)
    if read is None:
        read = reads[key] = loop.create_task(hook.aget_config())
        read.add_done_callback(partial(_read_done, reads, key))
    # Shielded: one caller's cancellation must not cancel the read the others wait for.
    return await asyncio.shield(read)


def _read_done(
    reads: dict[tuple[type, str], asyncio.Task[ClientConfig]],
    key: tuple[type, str],
    read: asyncio.Task[ClientConfig],
) -> None:
    if reads.get(key) is read:
        del reads[key]
    if not read.cancelled():
        read.exception()  # retrieved: a read whose callers all went away is no error


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    """An extra by plain name, or by the ``extra__flux__`` prefix older UIs write."""
    value = extras.get(name)
    if value in (None, ""):
        value = extras.get(f"extra__flux__{name}")
    return None if value == "" else value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _base_url(host: str | None, port: int | None) -> str:
    """The connection's host as a base URL: a full URL as is, a bare host name as https."""
    if not host:
        return DEFAULT_BASE_URL
    host = host.strip().rstrip("/")
    if "://" in host:
        return host
    scheme = "http" if is_loopback_host(host) else "https"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def build_config(
    *, password: str | None, host: str | None, port: int | None, extras: Mapping[str, Any]
) -> ClientConfig:
    """The client configuration described by a connection's fields."""
    timeout = _extra(extras, "timeout")
    try:
        seconds = float(timeout) if timeout is not None else DEFAULT_TIMEOUT
    except (TypeError, ValueError):
        raise ConnectionConfigError(
            f"the flux connection is misconfigured: the timeout extra must be a number of "
            f"seconds, got {timeout!r}"
        ) from None
    paths = {name: _extra(extras, name) for name in PATH_FIELDS}
    try:
        return ClientConfig(
            api_key=password or "",
            base_url=_base_url(host, port),
            auth_header=_extra(extras, "header_name") or DEFAULT_AUTH_HEADER,
            timeout=seconds,
            allow_insecure_http=_as_bool(_extra(extras, "allow_insecure_http")),
            **{name: path for name, path in paths.items() if path},
        )
    except ValueError as exc:
        raise ConnectionConfigError(f"the flux connection is misconfigured: {exc}") from None


class FluxHook(BaseHook):
    """Talks to the FLUX task API through the connection ``flux_conn_id``.

    :param flux_conn_id: the Airflow connection (type ``flux``) to use.
    """

    conn_name_attr = "flux_conn_id"
    default_conn_name = "flux_default"
    conn_type = "flux"
    hook_name = "Flux"

    def __init__(self, flux_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flux_conn_id = flux_conn_id

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields (as declared in the provider info) for Airflow 3.1's form."""
        return connection_form_widgets(get_provider_info()["connection-types"][0]["conn-fields"])

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel and hide the standard form fields (as declared in the provider info)."""
        declared = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
        return {
            "hidden_fields": declared["hidden-fields"],
            "relabeling": declared["relabeling"],
            "placeholders": declared["placeholders"],
        }

    def get_config(self) -> ClientConfig:
        """Read the connection (sync: worker code only)."""
        conn = self.get_connection(self.flux_conn_id)
        if conn.password:
            # Airflow masks connection passwords already; this also covers custom backends.
            mask_secret(conn.password)
        return build_config(
            password=conn.password, host=conn.host, port=conn.port, extras=conn.extra_dejson
        )

    async def aget_config(self) -> ClientConfig:
        """Read the connection without blocking the event loop (trigger code)."""
        # Masked by Airflow on retrieval; mask_secret itself is a blocking call.
        conn = await get_async_connection(self.flux_conn_id, hook=self)
        extras = await get_async_extra_dejson(conn)
        return build_config(password=conn.password, host=conn.host, port=conn.port, extras=extras)

    @cached_property
    def client(self) -> FluxClient:
        """The sync client, built once per hook and reused for every call."""
        return FluxClient(self.get_config())

    def get_conn(self) -> FluxClient:
        """The sync client (Airflow's usual hook accessor)."""
        return self.client

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[AsyncFluxClient]:
        """The connection's shared async client for the duration of the ``async with`` block.

        Every block on the same event loop whose connection reads the same (key,
        host, paths, header, timeout) shares one client and its bounded
        connection pool; the last block to end closes it (see
        :mod:`flux_provider.api.pool`). Each block reads the connection anew (or
        joins a read already under way), so a changed connection gets a client of
        its own.
        """
        await async_io_ready()
        async with shared_clients.lease(await _read_config(self)) as client:
            yield client

    def close(self) -> None:
        """Close the sync client's connections if it was built."""
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    def create_task(
        self, input: TaskInput, *, model: str = MODEL_NAME, callback_url: str | None = None
    ) -> str:
        """Submit a task and return the API's task id."""
        return self.client.create_task(input, model=model, callback_url=callback_url)

    def get_task(self, flux_task_id: str) -> TaskInfo:
        """One poll of a task."""
        return self.client.get_task(flux_task_id)

    def wait_for_task(
        self,
        flux_task_id: str,
        *,
        poll_interval: float | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> TaskInfo:
        """Block until the task ends (non-deferrable mode); returns its final info."""
        return self.client.wait_for_task(flux_task_id, poll_interval=poll_interval, timeout=timeout)

    def get_balance(self) -> float:
        """The account's credits (free to call)."""
        return self.client.get_balance()

    def estimate_credits(self, input: TaskInput, *, model: str = MODEL_NAME) -> float:
        """What a task with ``input`` would cost, in credits (creates nothing)."""
        return self.client.estimate_credits(input, model=model)

    async def acreate_task(
        self, input: TaskInput, *, model: str = MODEL_NAME, callback_url: str | None = None
    ) -> str:
        """Async twin of :meth:`create_task`."""
        async with self.async_client() as client:
            return await client.create_task(input, model=model, callback_url=callback_url)

    async def aget_task(self, flux_task_id: str) -> TaskInfo:
        """Async twin of :meth:`get_task`."""
        async with self.async_client() as client:
            return await client.get_task(flux_task_id)

    async def aget_balance(self) -> float:
        """Async twin of :meth:`get_balance`."""
        async with self.async_client() as client:
            return await client.get_balance()

    async def aestimate_credits(self, input: TaskInput, *, model: str = MODEL_NAME) -> float:
        """Async twin of :meth:`estimate_credits`."""
        async with self.async_client() as client:
            return await client.estimate_credits(input, model=model)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: ask for the account's balance.

        Proves the host, the path and the key at once and creates nothing. A
        wrong key, host or path fails with the server's message; a 404 is a
        failure too (a wrong base URL or balance path), never "key accepted".
        """
        try:
            config = self.get_config()
        except FluxError as exc:
            return False, str(exc)
        try:
            with FluxClient(config) as client:
                balance = client.get_balance(retry=False)
        except FluxError as exc:
            return False, f"{config.base_url}{config.balance_path}: {exc}"
        return (
            True,
            f"Connected to {config.base_url}: the account has {credits_text(balance)} credits.",
        )
