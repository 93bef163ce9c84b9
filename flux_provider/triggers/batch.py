"""``FluxBatchTrigger``: runs a batch's try in the triggerer, bound by the API, not by workers.

It submits up to ``max_in_flight`` generations, polls them with the connection's shared client,
stores each image as soon as its generation ends, and records every step in the batch's
journal (:mod:`flux_provider.api.batch.journal`, beside the images). A triggerer restart or
adoption re-creates it from its kwargs: it reads the journal and re-attaches to what the API
already accepted, never submitting it again. Its kwargs are plain primitives (the connection
id, never the key). File and storage I/O runs in threads of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from flux_provider.api.batch import (
    BatchEnd,
    BatchJournal,
    BatchRunner,
    BatchSettings,
    ItemRecord,
)
from flux_provider.api.client import AsyncFluxClient
from flux_provider.api.config import ClientConfig
from flux_provider.api.downloads import DEFAULT_MAX_IMAGE_BYTES, ResultDownloader, StoredImage
from flux_provider.api.errors import FluxError
from flux_provider.api.models import Flux2MaxInput, TaskInfo
from flux_provider.api.polling import DEFAULT_MAX_CONSECUTIVE_ERRORS, TaskWait, WaitSettings
from flux_provider.api.polling import log_progress as _log_progress
from flux_provider.hooks import FluxHook
from flux_provider.hooks.storage import storage_path
from flux_provider.metrics import FluxMetrics
from flux_provider.triggers.events import BatchEvent

_T = TypeVar("_T")
IO_THREADS = 12
"""Threads for storage I/O (journal records and image downloads) of one batch."""


class _BatchIO:
    """A runner's I/O: the shared client, a downloader and the journal, storage in threads."""

    def __init__(
        self,
        client: AsyncFluxClient,
        journal: BatchJournal,
        downloader: ResultDownloader,
        folder: Any,
        token: str,
        threads: ThreadPoolExecutor,
        log: Any,
        metrics: FluxMetrics,
    ) -> None:
        self._metrics = metrics
        self._ended_at: dict[str, float] = {}
        self._client = client
        self._journal = journal
        self._downloader = downloader
        self._folder = folder
        self._token = token
        self._threads = threads
        self._log = log

    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def create(self, request: Flux2MaxInput) -> str:
        flux_task_id = await self._client.create_task(request)
        self._metrics.submitted()
        return flux_task_id

    async def follow(self, wait: TaskWait, first_delay: float) -> TaskInfo:
        info = await self._client.follow(wait, on_poll=self._warn_only, first_delay=first_delay)
        self._ended_at[info.flux_task_id] = time.time()
        self._metrics.ended(info)
        return info

    def _warn_only(self, wait: TaskWait, outcome: Any) -> None:
        progress = wait.progress(outcome)
        if progress is not None and progress[0] == "warning":
            _log_progress(self._log, wait, outcome)

    async def store(self, info: TaskInfo) -> list[StoredImage]:
        stored = await self._in_thread(
            functools.partial(
                self._downloader.download_all, info.result_urls, self._folder, info.flux_task_id
            )
        )
        self._metrics.stored(stored, ready_at=self._ended_at.pop(info.flux_task_id, None))
        return stored

    async def save(self, record: ItemRecord) -> None:
        await self._in_thread(functools.partial(self._journal.save, record))

    async def still_runner(self) -> bool:
        return await self._in_thread(self._journal.runner) == self._token


class FluxBatchTrigger(BaseTrigger):
    """Runs one try of a batch (see the module docstring) and yields one :class:`BatchEvent`.

    :param flux_conn_id: the Airflow connection to call the API with.
    :param download_to: the batch's storage (a path or URL string); its journal is in there.
    :param journal_key: the task instance's journal folder name.
    :param try_number: the Airflow try (which earlier failures it submits anew).
    :param deadline: absolute ``time.time()`` after which the try ends with ``timeout``.
    :param deadline_name: the limit the deadline comes from (``timeout``, ``execution_timeout``).
    :param max_in_flight: the most generations running at once.
    :param poll_interval: fixed seconds between polls of a task, ``None`` = adaptive.
    :param max_consecutive_errors: transient poll failures in a row absorbed per task.
    :param max_download_bytes: the size cap of each image.
    :param dag_id: the batch's DAG, for the metrics' tags.
    :param task_id: the batch's task, for the metrics' tags.
    """

    def __init__(
        self,
        flux_conn_id: str,
        *,
        download_to: str,
        journal_key: str,
        try_number: int,
        deadline: float,
        deadline_name: str = "timeout",
        max_in_flight: int = 16,
        poll_interval: float | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        max_download_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        dag_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.dag_id = dag_id
        self.task_id = task_id
        self.flux_conn_id = flux_conn_id
        self.download_to = str(download_to)
        self.journal_key = str(journal_key)
        self.try_number = int(try_number)
        self.deadline = float(deadline)
        self.deadline_name = str(deadline_name)
        self.max_in_flight = int(max_in_flight)
        self.poll_interval = None if poll_interval is None else float(poll_interval)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.max_download_bytes = int(max_download_bytes)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs: primitives only, no secret."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "flux_conn_id": self.flux_conn_id,
                "download_to": self.download_to,
                "journal_key": self.journal_key,
                "try_number": self.try_number,
                "deadline": self.deadline,
                "deadline_name": self.deadline_name,
                "max_in_flight": self.max_in_flight,
                "poll_interval": self.poll_interval,
                "max_consecutive_errors": self.max_consecutive_errors,
                "max_download_bytes": self.max_download_bytes,
                "dag_id": self.dag_id,
                "task_id": self.task_id,
            },
        )

    def _settings(self) -> BatchSettings:
        return BatchSettings(
            max_in_flight=self.max_in_flight,
            deadline=self.deadline,
            deadline_name=self.deadline_name,
            wait=WaitSettings(
                poll_interval=self.poll_interval,
                max_consecutive_errors=self.max_consecutive_errors,
            ),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Run the try; yield one event (unless another runner took the batch over)."""
        try:
            end = await run_batch_try(
                FluxHook(flux_conn_id=self.flux_conn_id),
                download_to=self.download_to,
                journal_key=self.journal_key,
                try_number=self.try_number,
                settings=self._settings(),
                max_download_bytes=self.max_download_bytes,
                log=self.log,
                metrics=FluxMetrics(self.dag_id, self.task_id),
            )
        except FluxError as error:
            event = BatchEvent.from_error(error)
        else:
            if end.status == "superseded":
                # The newer runner yields this task's event; this one waits to be cancelled.
                self.log.warning("Another runner claimed this batch: leaving it to that one")
                await asyncio.sleep(max(0.0, self.deadline - time.time()))
            event = BatchEvent.from_end(end)
        yield TriggerEvent(event.to_payload())


async def run_batch_try(
    hook: FluxHook,
    *,
    download_to: str,
    journal_key: str,
    try_number: int,
    settings: BatchSettings,
    max_download_bytes: int,
    log: Any,
    metrics: FluxMetrics,
    config: ClientConfig | None = None,
) -> BatchEnd:
    """Claim the batch's journal and run one try with the connection's shared client.

    The trigger calls it on the triggerer's loop; a batch that does not defer calls it on its
    worker with the connection already read (``config``).
    """
    loop = asyncio.get_running_loop()
    folder = storage_path(download_to)
    journal = BatchJournal(folder, journal_key)
    with ThreadPoolExecutor(IO_THREADS, thread_name_prefix="flux-batch") as threads:
        token = await loop.run_in_executor(threads, journal.claim)
        inputs = await loop.run_in_executor(threads, journal.read_inputs)
        records = await loop.run_in_executor(threads, journal.records)
        async with hook.async_client(config) as client:
            downloader = hook.result_downloader(client.config, max_bytes=max_download_bytes)
            try:
                io = _BatchIO(client, journal, downloader, folder, token, threads, log, metrics)
                runner = BatchRunner(inputs, records, io, settings, try_number=try_number, log=log)
                return await runner.run()
            finally:
                downloader.close()
