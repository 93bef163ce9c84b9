"""Helpers shared by the Airflow-layer tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from flux_provider.triggers import FluxTaskTrigger

CONN_FIELDS = {
    "header_name",
    "create_path",
    "info_path",
    "balance_path",
    "estimate_path",
    "timeout",
    "allow_insecure_http",
}
"""The connection form's Flux fields, on every Airflow version."""


def flux_trigger(
    flux_task_id: str, *, wait: float = 30, poll_interval: float = 0.05, **overrides: Any
) -> FluxTaskTrigger:
    """A trigger for ``flux_task_id`` on ``flux_default`` that gives up after ``wait`` seconds."""
    options: dict[str, Any] = {
        "deadline": time.time() + wait,
        "poll_interval": poll_interval,
        "max_consecutive_errors": 3,
        **overrides,
    }
    return FluxTaskTrigger(flux_task_id, "flux_default", **options)


@contextlib.contextmanager
def memory_object_store() -> Iterator[Any]:
    """A ``memory://`` object store behind Airflow's ``ObjectStoragePath``, as ``s3://`` would be
    (whole objects, no local path); its fsspec filesystem is yielded, emptied afterwards."""
    from airflow.sdk.io import fs
    from fsspec.implementations.memory import MemoryFileSystem

    memory = MemoryFileSystem()
    fs._BUILTIN_SCHEME_TO_FS["memory"] = lambda conn_id, options: memory
    fs._register_filesystems.cache_clear()
    try:
        yield memory
    finally:
        del fs._BUILTIN_SCHEME_TO_FS["memory"]
        fs._register_filesystems.cache_clear()
        memory.store.clear()
        memory.pseudo_dirs[:] = [""]
