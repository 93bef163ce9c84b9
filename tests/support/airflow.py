"""Helpers shared by the Airflow-layer tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from flux_provider.triggers import FluxTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

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


class FakeTI:
    """The part of a task instance the operators touch: ``xcom_push`` (kept in ``xcoms``) and
    ``start_date`` (``None``, as for a task not started, until a test sets it)."""

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}
        self.start_date: datetime | None = None

    def xcom_push(self, key: str, value: Any) -> None:
        """Keep the value."""
        self.xcoms[key] = value


class FakeStore(dict[str, Any]):
    """A ``task_state_store`` kept in memory."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def task_context(ti: FakeTI | None = None, store: FakeStore | None = None) -> Context:
    """A minimal execution context for calling an operator's ``execute`` or ``execute_complete``,
    or a sensor's ``poke``, directly: ``ti`` (a new :class:`FakeTI` unless given) and, if given,
    ``store`` as the ``task_state_store``. Keep the ``ti`` or ``store`` passed in to look at what
    the task left in them."""
    entries: dict[str, object] = {"ti": FakeTI() if ti is None else ti}
    if store is not None:
        entries["task_state_store"] = store
    # The one cast to Airflow's Context: it types "ti" as the runtime task instance and
    # "task_state_store" as its accessor, which only a running task has. The stand-ins have the
    # part of them the provider uses.
    return cast("Context", entries)


def flux_trigger(
    flux_task_id: str, *, wait: float = 30, poll_interval: float | None = 0.05, **overrides: Any
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
    from fsspec.implementations.memory import MemoryFileSystem  # type: ignore[import-untyped]

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
