"""Test-side differences between the supported Airflow versions (3.1 and later).

* ``serde`` serialises trigger kwargs the way the installed Airflow stores them in the
  ``trigger`` table: ``airflow.sdk.serde`` since Airflow 3.2, ``BaseSerialization`` in Airflow
  3.1 (which has no ``airflow.sdk.serde``).
* ``HAS_TASK_STATE_STORE``: Airflow 3.3 gives tasks a ``task_state_store``; below it the
  operator cannot re-attach, so every try submits (as the README says).
* :func:`logged_by`: Airflow 3.1 writes no logger name into trigger log records.
* ``CONNECTION_TEST_FAILURE_EXIT_CODE``: what ``airflow connections test`` exits with when the
  test fails (1 since Airflow 3.3, 0 before).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from airflow import __version__ as airflow_version
from packaging.version import Version

HAS_TASK_STATE_STORE = Version(airflow_version).release >= (3, 3)
# ``airflow connections test`` exits 1 on a failed test since Airflow 3.3; before, it exits 0.
CONNECTION_TEST_FAILURE_EXIT_CODE = 1 if Version(airflow_version).release >= (3, 3) else 0

# Declared once: the two Airflow lines name and type them differently.
serialize: Callable[[Any], Any]
deserialize: Callable[[Any], Any]
try:
    from airflow.sdk import serde as _serde

    serialize, deserialize = _serde.serialize, _serde.deserialize
except ImportError:  # Airflow 3.1
    from airflow.serialization.serialized_objects import BaseSerialization

    serialize, deserialize = BaseSerialization.serialize, BaseSerialization.deserialize


serde = SimpleNamespace(serialize=serialize, deserialize=deserialize)


def logged_by(record: dict[str, Any], logger: str) -> bool:
    """The JSON log record was written by ``logger``, as far as the record tells.

    Airflow 3.2+ names the logger in trigger log records; 3.1 names none (only the source file,
    which moves with the code), so there any record may be the logger's: the caller's match on
    the message is what identifies it.
    """
    return "logger" not in record or bool(record["logger"] == logger)


__all__ = [
    "CONNECTION_TEST_FAILURE_EXIT_CODE",
    "HAS_TASK_STATE_STORE",
    "deserialize",
    "logged_by",
    "serde",
    "serialize",
]
