"""Things that are started and stopped: :class:`StartStop` makes them context managers."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import TypeVar

__all__ = ["StartStop", "require_started"]

_Started = TypeVar("_Started", bound="StartStop")
_Value = TypeVar("_Value")


class StartStop(abc.ABC):
    """A resource with :meth:`start` and :meth:`stop`; ``with`` runs one, then the other.

    :meth:`start` returns the resource itself, so ``with Thing() as thing:`` and
    ``thing = Thing().start()`` both hand back the started object.
    """

    @abc.abstractmethod
    def start(self: _Started) -> _Started:
        """Start the resource and return it."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the resource; calling it again, or before :meth:`start`, does nothing."""

    def __enter__(self: _Started) -> _Started:
        """Start the resource."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the resource, however the block ended."""
        self.stop()


def require_started(value: _Value | None, message: str) -> _Value:
    """``value``, which is set once the resource has started.

    Raises:
        RuntimeError: With ``message``, if ``value`` is ``None`` (not started yet).
    """
    if value is None:
        raise RuntimeError(message)
    return value
