"""A real StatsD listener on loopback, and Airflow's ``Stats`` in this process pointed at it.

Airflow sends StatsD over UDP when ``[metrics] statsd_on`` is set: the listener is a UDP socket on
127.0.0.1 that keeps every line it receives (``airflow.flux.credits:6|c``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any


class StatsdListener:
    """A UDP socket on 127.0.0.1 keeping every StatsD line it receives, read by a thread."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.extend(line for line in packet.decode().splitlines() if line)

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def environment(self) -> dict[str, str]:
        """Airflow's settings that send StatsD here."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        }

    def values(self, name: str) -> list[tuple[float, str]]:
        """Each value sent for ``name`` (prefix included) with its type (``c``, ``ms``...)."""
        found = []
        for line in list(self.lines):
            metric, _, rest = line.partition(":")
            if metric == name:
                value, _, kind = rest.partition("|")
                found.append((float(value), kind.split("|")[0]))
        return found

    def total(self, name: str) -> float:
        """The sum of the values sent for counter ``name``."""
        return sum(value for value, kind in self.values(name) if kind == "c")


def _reset_stats(on: bool) -> None:
    """(Re)build the Stats backend of this process from the current settings."""
    try:  # Airflow 3.3: the task SDK's module-level backend, set up by the task runner
        from airflow.sdk._shared.observability.metrics import stats
        from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
        from airflow.sdk.observability.metrics import stats_utils
    except ImportError:  # Airflow 3.1: a singleton whose factory is chosen at import
        _reset_legacy_stats(on)
        return
    module: Any = stats
    if not hasattr(module, "initialize"):  # Airflow 3.2: the class Stats, built by its metaclass
        factory_of: Any = stats_utils.get_stats_factory
        module.Stats.initialize(factory=factory_of(module.Stats) if on else NoStatsLogger)
        return
    factory = stats_utils.get_stats_factory() if on else NoStatsLogger
    stats.initialize(factory=factory, export_legacy_names=False)


def _reset_legacy_stats(on: bool) -> None:
    from airflow.providers.common.compat.sdk import Stats

    metaclass: Any = type(Stats)
    package = metaclass.__module__.rsplit(".", 1)[0]  # "airflow" or "airflow.observability"
    loggers = importlib.import_module(f"{package}.metrics.statsd_logger")
    base = importlib.import_module(f"{package}.metrics.base_stats_logger")
    metaclass.factory = loggers.get_statsd_logger if on else base.NoStatsLogger
    # The built logger is kept on the class itself (which shadows the metaclass's attribute).
    legacy: Any = Stats
    legacy.instance = None


@contextlib.contextmanager
def stats_sent_to(listener: StatsdListener) -> Iterator[None]:
    """Airflow's ``Stats`` in this process sends StatsD to ``listener`` inside the block."""
    saved = {key: os.environ.get(key) for key in listener.environment()}
    os.environ.update(listener.environment())
    _reset_stats(on=True)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reset_stats(on=False)
