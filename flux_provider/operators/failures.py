"""How an API-layer error becomes an Airflow outcome: a retry or a hard failure.

Retryable failures raise an ordinary exception so the task's ``retries``
apply; hopeless ones raise ``AirflowFailException`` so no credits are burnt on
retries that cannot help. The task log says which, and why.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, NoReturn, ParamSpec, Protocol, TypeVar

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


class RemembersFailure(Protocol):
    """An operator that keeps why its try failed (its lineage failure event reports it)."""

    failure_message: str | None


_Task = TypeVar("_Task", bound=RemembersFailure)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def keeps_failure_message(
    method: Callable[Concatenate[_Task, _P], _R],
) -> Callable[Concatenate[_Task, _P], _R]:
    """Decorate ``execute``-like methods: the message of the exception that fails the try is
    kept in ``failure_message`` before it propagates."""

    @functools.wraps(method)
    def keeping(self: _Task, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            self.failure_message = str(error)
            raise

    return keeping
