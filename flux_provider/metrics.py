"""FLUX metrics through Airflow's ``Stats`` (StatsD or OpenTelemetry, as Airflow is set up).

Every name starts with ``flux.`` (Airflow adds its ``[metrics] statsd_prefix``, ``airflow`` by
default); each metric is tagged with the DAG and the task where the backend keeps tags
(Datadog-style StatsD, OpenTelemetry; plain StatsD drops them). Emitted by the operators on the
workers and by the batch trigger in the triggerer:

========================================  =======  ==============================================
name                                      kind     what
========================================  =======  ==============================================
``flux.generations.submitted``            counter  a task the API accepted
``flux.generations.succeeded``            counter  a generation that ended with its images
``flux.generations.failed``               counter  one that did not (tag ``kind``: ``generation``,
                                                   ``moderation``, ``no_result``, ``timeout``...)
``flux.credits``                          counter  credits spent (rounded to whole credits)
``flux.images.stored``                    counter  images copied to ``download_to``
``flux.images.bytes``                     counter  their bytes
``flux.reattached``                       counter  a retry that re-attached instead of paying
``flux.reused``                           counter  a generation reused (``reuse=True``)
``flux.generation.duration``              timer    the API's generation time
``flux.image.ready_to_stored``            timer    from the generation's end to its image stored
========================================  =======  ==============================================
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow.providers.common.compat.sdk import Stats

from flux_provider.api.downloads import StoredImage
from flux_provider.api.errors import (
    FluxError,
    GenerationFailedError,
    NoResultError,
    TaskTimeoutError,
)
from flux_provider.api.models import TaskInfo

PREFIX = "flux."
MAX_TIMING_SECONDS = 365 * 24 * 3600.0
MAX_CREDITS = 1e12
"""Credits past this (only a hostile answer reports them) are not counted."""
"""Longer timings (only a hostile answer reports them) are sent as this."""

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _never_failing(name: str) -> Iterator[None]:
    """A metric that cannot be sent is logged, never a failure of the task that sends it."""
    try:
        yield
    except Exception as error:
        log.warning("Could not send the metric %s%s: %s", PREFIX, name, error)


def failure_kind(error: FluxError) -> str:
    """A short word for what failed: the ``kind`` tag of ``flux.generations.failed``."""
    if isinstance(error, GenerationFailedError):
        return "generation" if error.retryable else "moderation"
    if isinstance(error, NoResultError):
        return "no_result"
    if isinstance(error, TaskTimeoutError):
        return "timeout"
    name = type(error).__name__.removesuffix("Error")
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_") or "error"


@dataclass(frozen=True)
class FluxMetrics:
    """The metrics of one task (its DAG and task id are the tags)."""

    dag_id: str | None = None
    task_id: str | None = None
    clock: Any = field(default=time.time, compare=False)

    @classmethod
    def of(cls, context: Any) -> FluxMetrics:
        """The metrics of the task instance running in ``context``."""
        ti = context.get("ti") if hasattr(context, "get") else None
        return cls(getattr(ti, "dag_id", None), getattr(ti, "task_id", None))

    @property
    def tags(self) -> dict[str, str]:
        """The tags every metric carries."""
        return {k: v for k, v in (("dag_id", self.dag_id), ("task_id", self.task_id)) if v}

    def _incr(self, name: str, count: int = 1, **tags: str) -> None:
        with _never_failing(name):
            Stats.incr(PREFIX + name, count=count, tags={**self.tags, **tags})

    def _timing(self, name: str, seconds: float) -> None:
        # The API says how long a generation took: a hostile answer may say 1e308 seconds.
        bounded = min(max(seconds, 0.0), MAX_TIMING_SECONDS)
        with _never_failing(name):
            Stats.timing(PREFIX + name, timedelta(seconds=bounded), tags=self.tags)

    def submitted(self) -> None:
        """The API accepted a task."""
        self._incr("generations.submitted")

    def reattached(self) -> None:
        """A try re-attached to an earlier try's task."""
        self._incr("reattached")

    def reused(self) -> None:
        """An identical generation was reused."""
        self._incr("reused")

    def ended(self, info: TaskInfo) -> None:
        """A generation ended: success with images, or the failure it stands for."""
        failure = info.failure()
        if failure is None:
            self._incr("generations.succeeded")
        else:
            self.failed(failure)
        if info.credits and info.credits < MAX_CREDITS:
            self._incr("credits", round(info.credits))
        if info.duration_s is not None:
            self._timing("generation.duration", info.duration_s)

    def failed(self, error: FluxError) -> None:
        """A generation, or the wait for it, failed."""
        self._incr("generations.failed", kind=failure_kind(error))

    def stored(self, images: Sequence[StoredImage], ready_at: float | None) -> None:
        """Images were stored; ``ready_at`` (epoch seconds) is when their generation ended."""
        if not images:
            return
        self._incr("images.stored", len(images))
        self._incr("images.bytes", sum(image.bytes for image in images))
        if ready_at is not None:
            self._timing("image.ready_to_stored", self.clock() - ready_at)
