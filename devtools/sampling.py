"""Taking a measurement again and again while a test works: :class:`Sampler`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["Sampler"]


class Sampler:
    """Calls ``sample`` on entering, every ``interval`` seconds in a thread, and on leaving.

    The first exception ``sample`` raises in the thread stops the sampling and is raised again
    on leaving (a broken measurement must not pass silently).
    """

    def __init__(self, sample: Callable[[], None], interval: float) -> None:
        self._sample = sample
        self.interval = interval
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def sample(self) -> None:
        """Take one sample now."""
        self._sample()
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as error:
                self._error = error
                return

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._error is not None and exc is None:
            raise self._error
        if exc is None:
            self.sample()
