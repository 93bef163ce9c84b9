"""The Crun task API for FLUX.2 [max] over httpx: usable and testable without Airflow.

Nothing in this package imports Airflow (a test enforces it). Its modules:

* :mod:`~flux_provider.api.config`: where and how to reach the API (:class:`ClientConfig`);
* :mod:`~flux_provider.api.client`: :class:`FluxClient` and :class:`AsyncFluxClient`;
* :mod:`~flux_provider.api.models`, :mod:`~flux_provider.api.errors`: the typed input, task
  and result, and one error class per failure kind, each with ``retryable``;
* :mod:`~flux_provider.api.wire`, :mod:`~flux_provider.api.readers`: the only code that knows
  the wire's field names, and its tolerant value readers;
* :mod:`~flux_provider.api.retry`, :mod:`~flux_provider.api.polling`: how one call is retried
  and how one task is waited for (no I/O);
* :mod:`~flux_provider.api.downloads`: result images copied to storage;
* :mod:`~flux_provider.api.lanes`, :mod:`~flux_provider.api.pool`: the triggerer's shared
  client and its bounded transport;
* :mod:`~flux_provider.api.formatting`: numbers in messages for people.
"""

from __future__ import annotations

from flux_provider.api.client import AsyncFluxClient, FluxClient, TaskInput
from flux_provider.api.config import ClientConfig
from flux_provider.api.models import Flux2MaxInput, TaskInfo, TaskState
from flux_provider.api.wire import task_info_from_callback

__all__ = [
    "AsyncFluxClient",
    "ClientConfig",
    "Flux2MaxInput",
    "FluxClient",
    "TaskInfo",
    "TaskInput",
    "TaskState",
    "task_info_from_callback",
]
