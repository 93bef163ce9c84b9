"""Rows of Airflow's metadata database as tests read them, bypassing Airflow.

Airflow keeps a deferred task's trigger in the ``trigger`` table, its kwargs serialised with
``airflow.sdk.serde`` (``BaseSerialization`` before Airflow 3.2), as JSON, encrypted with the
``[core] fernet_key`` when there is one. :func:`decode_trigger_kwargs` undoes that, so a test can
check what a triggerer would re-create a trigger from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, MultiFernet

__all__ = ["TriggerRow", "TriggererJobRow", "decode_trigger_kwargs"]


@dataclass(frozen=True)
class TriggerRow:
    """One row of the ``trigger`` table with its kwargs decrypted and deserialised."""

    id: int
    classpath: str
    kwargs: dict[str, Any]
    triggerer_id: int | None


@dataclass(frozen=True)
class TriggererJobRow:
    """A ``TriggererJob`` of the ``job`` table, and which process of the test runs it.

    ``component`` and ``pid`` are the harness's knowledge (the table records no pid); they are
    ``None`` for a job no process of the harness is known to run.
    """

    id: int
    state: str | None
    hostname: str | None
    start_date: datetime | None
    latest_heartbeat: datetime | None
    component: str | None = None
    pid: int | None = None


def decode_trigger_kwargs(stored: str, fernet_key: str) -> dict[str, Any]:
    """A trigger row's ``kwargs`` column as the dict the trigger was created with.

    Args:
        stored: The column's text: a Fernet token, or plain JSON when Airflow has no key.
        fernet_key: ``[core] fernet_key`` (comma-separated keys for rotation; empty: none).

    Raises:
        ValueError: The kwargs are encrypted but no key was given, or they are not a dict.
        cryptography.fernet.InvalidToken: None of the keys decrypts them.
    """
    if not stored.startswith("{"):
        if not fernet_key:
            raise ValueError("the trigger kwargs are encrypted, but there is no fernet key")
        fernet = MultiFernet([Fernet(part.strip().encode()) for part in fernet_key.split(",")])
        stored = fernet.decrypt(stored.encode()).decode()
    kwargs = _deserialize(json.loads(stored))
    if not isinstance(kwargs, dict):
        raise ValueError(f"trigger kwargs are a {type(kwargs).__name__}, not a dict")
    return kwargs


def _deserialize(value: Any) -> Any:
    try:
        from airflow.sdk.serde import deserialize
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import BaseSerialization

        return BaseSerialization.deserialize(value)
    return deserialize(value)
