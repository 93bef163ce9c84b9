"""How an API-layer error becomes an Airflow outcome: a retry or a hard failure.

Retryable failures raise an ordinary exception so the task's ``retries``
apply; hopeless ones raise ``AirflowFailException`` so no credits are burnt on
retries that cannot help. The task log says which, and why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from flux_provider.api.errors import FluxError


class FluxTaskError(AirflowException):
    """A retryable failure: Airflow's ``retries`` apply."""


def fail(error: FluxError, log: logging.Logger | Any) -> NoReturn:
    """Raise the Airflow exception that matches ``error``'s retryability, logging why."""
    if error.retryable:
        log.error("Retryable failure (Airflow's retries apply): %s", error)
        raise FluxTaskError(str(error)) from error
    log.error("Failing without retry (a retry cannot help): %s", error)
    raise AirflowFailException(str(error)) from error


@contextmanager
def failing_the_task(log: logging.Logger | Any) -> Iterator[None]:
    """Turn a :class:`FluxError` raised in the block into the matching Airflow failure."""
    try:
        yield
    except FluxError as error:
        fail(error, log)
