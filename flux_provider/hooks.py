"""``FluxHook``: an Airflow Connection turned into a configured API client.

The connection (type ``flux``) holds the API key as its password and the API
base URL as its host; optional extras name the auth header, the two endpoint
paths, the request timeout and the plain-http opt-in. Worker code uses the
sync client; trigger code uses the async one, whose connection is read with
``get_async_connection`` so the triggerer's event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import importlib
import weakref
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from flux_provider import get_provider_info
from flux_provider.client import (
    DEFAULT_AUTH_HEADER,
    DEFAULT_BASE_URL,
    DEFAULT_CREATE_PATH,
    DEFAULT_INFO_PATH,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    AsyncFluxClient,
    ClientConfig,
    FluxClient,
    is_loopback_host,
    shared_ssl_context,
)
from flux_provider.compat import (
    connection_form_widgets,
    get_async_connection,
    get_async_extra_dejson,
)
from flux_provider.errors import FluxError
from flux_provider.models import MODEL_NAME, Flux2MaxInput, TaskInfo

_LAZY_MODULES = (
    "anyio._backends._asyncio",
    "asgiref.sync",
    "airflow.sdk.execution_time.cache",
    "airflow.sdk.execution_time.supervisor",
)
_warm_ups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[None]] = (
    weakref.WeakKeyDictionary()
)


def _prepare_async_io() -> None:
    """The slow first-use work of async I/O: the TLS context and lazily imported modules."""
    shared_ssl_context()
    for module in _LAZY_MODULES:
        importlib.import_module(module)


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
    await ready


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
        raise ValueError(
            f"the flux connection is misconfigured: the timeout extra must be a number of "
            f"seconds, got {timeout!r}"
        ) from None
    try:
        return ClientConfig(
            api_key=password or "",
            base_url=_base_url(host, port),
            auth_header=_extra(extras, "header_name") or DEFAULT_AUTH_HEADER,
            create_path=_extra(extras, "create_path") or DEFAULT_CREATE_PATH,
            info_path=_extra(extras, "info_path") or DEFAULT_INFO_PATH,
            timeout=seconds,
            allow_insecure_http=_as_bool(_extra(extras, "allow_insecure_http")),
        )
    except ValueError as exc:
        raise ValueError(f"the flux connection is misconfigured: {exc}") from None


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

    async def get_async_client(self) -> AsyncFluxClient:
        """A new async client; the caller owns it and must ``aclose`` it."""
        await async_io_ready()
        return AsyncFluxClient(await self.aget_config())

    def close(self) -> None:
        """Close the sync client's connections if it was built."""
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    def create_task(
        self,
        input: Flux2MaxInput | Mapping[str, Any],
        *,
        model: str = MODEL_NAME,
        callback_url: str | None = None,
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

    async def acreate_task(
        self,
        input: Flux2MaxInput | Mapping[str, Any],
        *,
        model: str = MODEL_NAME,
        callback_url: str | None = None,
    ) -> str:
        """Async twin of :meth:`create_task`."""
        async with await self.get_async_client() as client:
            return await client.create_task(input, model=model, callback_url=callback_url)

    async def aget_task(self, flux_task_id: str) -> TaskInfo:
        """Async twin of :meth:`get_task`."""
        async with await self.get_async_client() as client:
            return await client.get_task(flux_task_id)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: query a task id that cannot exist.

        A 404 proves the host answered and accepted the key; a 401 means the
        key is wrong. Nothing is submitted, so nothing is charged.
        """
        try:
            config = self.get_config()
            with FluxClient(config) as client:
                client.get_task("airflow-connection-test", retry=False)
        except ValueError as exc:
            return False, str(exc)
        except FluxError as exc:
            if exc.status_code == 404:
                return True, f"Connected to {config.base_url}; the API key was accepted."
            return False, str(exc)
        return True, f"Connected to {config.base_url}."
