"""Measuring helpers: process CPU and RSS (Linux ``/proc``), an event-loop lag probe, machine facts.

All functions are cheap enough to call inside a measured window; none imports Airflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib.metadata
import math
import os
import platform
import resource
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROBE_INTERVAL = 0.010
"""The lag probe sleeps this long and records how late it wakes up."""

_PR_SET_PDEATHSIG = 1


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process (``/proc/<pid>/stat``), ``None`` if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # After the command name: state(0) ppid(1) ... utime(11) stime(12).
    return (int(fields[11]) + int(fields[12])) / ticks


def open_fds() -> int:
    """File descriptors this process has open now (``/proc/self/fd``; 0 where there is none)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _status_kib(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def process_rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    """Another process's ``VmRSS`` (or ``VmHWM``, its peak) in KiB; ``None`` if it is gone."""
    try:
        return _status_kib(field, pid)
    except (OSError, LookupError):
        return None


def reset_process_peak_rss(pid: int) -> bool:
    """Reset another process's ``VmHWM`` to its current RSS (a process of the same user)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_kib() -> int:
    """Resident set size of this process now, in KiB (``VmRSS``)."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int:
    """Peak resident set size since start or the last :func:`reset_peak_rss` (``VmHWM``)."""
    return _status_kib("VmHWM")


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/self/clear_refs``); success."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def die_with_parent() -> None:
    """``preexec_fn`` for children: SIGKILL them if the benchmark process dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; ``nan`` for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class LoopLagProbe:
    """A coroutine that sleeps :data:`PROBE_INTERVAL` in a loop and records each overshoot.

    The overshoot is how long a callback that was due had to wait for the event loop: the
    event-loop lag every trigger in the loop suffers at that moment. Every ~20 wake-ups it also
    counts the open file descriptors (:attr:`max_fds`) and samples ``VmRSS``, the fallback for
    :func:`peak_rss_kib` when it cannot be reset.
    """

    def __init__(self, interval: float = PROBE_INTERVAL) -> None:
        self.interval = interval
        self.starts: list[float] = []
        self.lags: list[float] = []
        self.max_rss_kib = 0
        self.max_fds = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Probe until :meth:`stop` is called."""
        clock = time.perf_counter
        while not self._stop.is_set():
            before = clock()
            await asyncio.sleep(self.interval)
            self.starts.append(before)
            self.lags.append(max(0.0, clock() - before - self.interval))
            if len(self.lags) % 20 == 0:
                self.sample()

    def sample(self) -> None:
        """Take one reading of RSS and open descriptors."""
        self.max_rss_kib = max(self.max_rss_kib, rss_kib())
        self.max_fds = max(self.max_fds, open_fds())

    def stop(self) -> None:
        """End :meth:`run` at its next wake-up."""
        self._stop.set()

    def summary(self, full_collections: Sequence[tuple[float, float]] = ()) -> dict[str, float]:
        """``lag_max_ms``, ``lag_p99_ms``, samples, and the max outside full collections.

        ``full_collections`` are (start, end) ``perf_counter`` times of generation-2 garbage
        collections; a sample whose sleep overlaps one is left out of ``lag_max_no_full_gc_ms``.
        """
        clean = [
            lag
            for start, lag in zip(self.starts, self.lags, strict=True)
            if not any(
                gc_start < start + self.interval + lag and gc_end > start
                for gc_start, gc_end in full_collections
            )
        ]
        return {
            "lag_max_ms": 1000 * max(self.lags, default=math.nan),
            "lag_p99_ms": 1000 * percentile(self.lags, 99),
            "lag_max_no_full_gc_ms": 1000 * max(clean, default=math.nan),
            "lag_samples": float(len(self.lags)),
        }


class GcPauses:
    """Records every garbage collection while installed (``gc.callbacks``).

    A full (generation 2) collection walks every live object of the process: with Airflow
    imported and thousands of triggers it is a stop-the-world pause that shows up as
    event-loop lag, whatever the triggers do.
    """

    def __init__(self) -> None:
        self.collections: list[tuple[int, float, float]] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        else:
            self.collections.append((int(info["generation"]), self._started, now))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    @property
    def full(self) -> list[tuple[float, float]]:
        """(start, end) of each generation-2 collection."""
        return [(start, end) for gen, start, end in self.collections if gen == 2]

    def summary(self) -> dict[str, float]:
        """Collections seen, full ones, and the longest pause in ms."""
        return {
            "gc_collections": float(len(self.collections)),
            "gc_full_collections": float(len(self.full)),
            "gc_max_pause_ms": 1000 * max((e - s for _, s, e in self.collections), default=0.0),
        }


def _mem_total_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """Facts about this machine and environment, for the results file and the README."""
    return {
        "cores": os.cpu_count(),
        "ram_gib": _mem_total_gib(),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "airflow": _version("apache-airflow"),
        "httpx": _version("httpx"),
        "pydantic": _version("pydantic"),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
