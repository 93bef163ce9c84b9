"""Where an operator keeps things across tries: the download folder and the try-spanning record.

``download_to`` may be a plain path, a URL (``s3://…``, ``gs://…``, ``file://…``) or an
``ObjectStoragePath``; the record of a submitted task lives in the task instance's
``task_state_store`` (Airflow 3.3+).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from flux_provider.api.errors import InvalidInputError


def storage_path(target: str | ObjectStoragePath) -> ObjectStoragePath:
    """A download target as an ``ObjectStoragePath``; a plain path means the local disk."""
    if isinstance(target, ObjectStoragePath):
        return target
    text = str(target).strip()
    if not text:
        raise InvalidInputError("download_to is empty")
    if "://" not in text:
        text = Path(text).expanduser().resolve().as_uri()
    return ObjectStoragePath(text)


def state_store(context: Any, log: Any, *, reattach: bool, warn: bool = True) -> Any:
    """The task instance's state store when re-attaching is on and Airflow has one.

    ``None`` otherwise; below Airflow 3.3 (no store) a warning says a retry will submit anew.
    """
    if not reattach:
        return None
    store = context.get("task_state_store")
    if store is None and warn:
        log.warning("task_state_store is unavailable: a retry will submit a new task")
    return store
