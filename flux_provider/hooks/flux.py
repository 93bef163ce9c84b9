"""``FluxHook``: an Airflow Connection turned into the configured API client, the one door to it.

Everything above the API layer (operators, the sensor, triggers, the credit checks) calls the
API through this hook. Worker code uses the sync client; trigger code uses the async one, whose
connection is read with ``get_async_connection`` so the triggerer's event loop is never blocked
(:mod:`~flux_provider.hooks.event_loop`); :mod:`~flux_provider.hooks.connection` reads the
connection's fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from flux_provider import get_provider_info
from flux_provider.api.client import AsyncFluxClient, FluxClient, TaskInput
from flux_provider.api.config import DEFAULT_WAIT_TIMEOUT, ClientConfig
from flux_provider.api.downloads import (
    DEFAULT_MAX_IMAGE_BYTES,
    ResultDownloader,
    StorageTarget,
    StoredImage,
    private_hosts_allowed,
)
from flux_provider.api.errors import FluxError
from flux_provider.api.formatting import credits_text
from flux_provider.api.models import MODEL_NAME, TaskInfo
from flux_provider.api.polling import OnPoll, TaskWait
from flux_provider.api.pool import shared_clients
from flux_provider.hooks.connection import build_config
from flux_provider.hooks.event_loop import async_io_ready, shared_config_read
from flux_provider.hooks.version_compat import (
    connection_form_widgets,
    get_async_connection,
    get_async_extra_dejson,
)


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

    @property
    def config(self) -> ClientConfig:
        """Where and how the sync client reaches the API (reads the connection once)."""
        return self.client.config

    def built_base_url(self) -> str | None:
        """The API base URL if this hook has already read its connection, else ``None``.

        For code that must not read the connection now (lineage, after the task ended).
        """
        built = self.__dict__.get("client")
        return built.config.base_url if isinstance(built, FluxClient) else None

    def get_conn(self) -> FluxClient:
        """The sync client (Airflow's usual hook accessor)."""
        return self.client

    @asynccontextmanager
    async def async_client(
        self, config: ClientConfig | None = None
    ) -> AsyncIterator[AsyncFluxClient]:
        """The connection's shared async client for the duration of the ``async with`` block.

        Every block on the same event loop whose connection reads the same (key,
        host, paths, header, timeout) shares one client and its bounded
        connection pool; the last block to end closes it (see
        :mod:`flux_provider.api.pool`). Each block reads the connection anew (or
        joins a read already under way), so a changed connection gets a client of
        its own; ``config``, when given, is the connection as already read (a worker reads it
        synchronously).
        """
        await async_io_ready()
        if config is None:
            config = await shared_config_read((type(self), self.flux_conn_id), self.aget_config)
        async with shared_clients.lease(config) as client:
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

    def get_task(self, flux_task_id: str, *, retry: bool = True) -> TaskInfo:
        """One poll of a task (``retry=False``: one request, transient errors raised)."""
        return self.client.get_task(flux_task_id, retry=retry)

    def wait_for_task(
        self,
        flux_task_id: str,
        *,
        poll_interval: float | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_poll: OnPoll | None = None,
    ) -> TaskInfo:
        """Block until the task ends (non-deferrable mode); returns its final info.

        ``on_poll`` is called after each poll that did not end the wait (to log progress).
        """
        return self.client.wait_for_task(
            flux_task_id, poll_interval=poll_interval, timeout=timeout, on_poll=on_poll
        )

    def follow_task(
        self, wait: TaskWait, *, on_poll: OnPoll | None = None, first_delay: float = 0.0
    ) -> TaskInfo:
        """Block until ``wait``'s task ends, as ``wait`` decides (its deadline included)."""
        return self.client.follow(wait, on_poll=on_poll, first_delay=first_delay)

    def result_downloader(
        self, config: ClientConfig | None = None, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    ) -> ResultDownloader:
        """A downloader of result images for this connection (close it when done).

        Result links may point inside the network only when the API itself lives there.
        ``config`` is the connection as already read (a trigger reads it asynchronously);
        without it, the sync client's is read.
        """
        base_url = (config or self.config).base_url
        return ResultDownloader(
            max_bytes=max_bytes, allow_private_hosts=private_hosts_allowed(base_url)
        )

    def download_results(
        self,
        urls: Sequence[str],
        folder: StorageTarget,
        flux_task_id: str,
        *,
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> list[StoredImage]:
        """Copy a task's result images into ``folder`` (see :mod:`flux_provider.api.downloads`)."""
        downloader = self.result_downloader(max_bytes=max_bytes)
        try:
            return downloader.download_all(urls, folder, flux_task_id)
        finally:
            downloader.close()

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

    async def await_for_task(
        self,
        flux_task_id: str,
        *,
        poll_interval: float | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_poll: OnPoll | None = None,
    ) -> TaskInfo:
        """Async twin of :meth:`wait_for_task` (the same arguments)."""
        async with self.async_client() as client:
            return await client.wait_for_task(
                flux_task_id, poll_interval=poll_interval, timeout=timeout, on_poll=on_poll
            )

    async def afollow_task(
        self, wait: TaskWait, *, on_poll: OnPoll | None = None, first_delay: float = 0.0
    ) -> TaskInfo:
        """Async twin of :meth:`follow_task`: the triggers' wait, on the shared client."""
        async with self.async_client() as client:
            return await client.follow(wait, on_poll=on_poll, first_delay=first_delay)

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
