"""Which process holds which TCP connection to a loopback server, read from Linux ``/proc``.

A fault or scale test wants to know how many connections *each* Airflow component opened to the
fake API, and the fake only sees client ports. :class:`ConnectionCensus` samples the kernel's
socket table (``/proc/net/tcp``, ``/proc/net/tcp6``) and each watched process's open file
descriptors, so every established connection to the server's port is attributed to the group
(a triggerer's session, say) whose process holds it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .sampling import Sampler
from .sessions import session_processes

__all__ = ["ConnectionCensus", "GroupCount", "connections_to", "socket_inodes"]

_ESTABLISHED = "01"


def connections_to(port: int) -> dict[int, int]:
    """Established client-side connections to ``port`` on this machine: socket inode -> the
    client's local port."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _ESTABLISHED:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port:
                found[int(fields[9])] = local_port
    return found


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` has open (empty if it is gone)."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


@dataclass
class GroupCount:
    """What one group of processes held: the most connections at once, and every one seen."""

    peak: int = 0
    seen: set[int] = field(default_factory=set)
    """Client ports of every connection seen (each a connection the group opened)."""

    @property
    def opened(self) -> int:
        """How many distinct connections the group was seen to hold."""
        return len(self.seen)


class ConnectionCensus(Sampler):
    """Samples, every ``interval`` seconds, which group holds each connection to ``port``.

    Args:
        port: The server's port (the fake API's).
        groups: Called at every sample: group name -> the session ids whose processes belong to
            it (a triggerer component's session, for instance). Sessions may come and go.
        interval: Seconds between samples.

    Use it as a context manager around the work; :attr:`counts` holds the result. A connection
    that opens and closes between two samples is not seen: the peak is a lower bound.
    """

    def __init__(
        self,
        port: int,
        groups: Callable[[], Mapping[str, Iterable[int]]],
        *,
        interval: float = 0.5,
    ) -> None:
        super().__init__(self._count, interval)
        self.port = port
        self.groups = groups
        self.counts: dict[str, GroupCount] = {}

    def _count(self) -> None:
        connections = connections_to(self.port)
        for name, sessions in self.groups().items():
            held: set[int] = set()
            for session in sessions:
                for pid in session_processes(session):
                    held |= socket_inodes(pid) & connections.keys()
            count = self.counts.setdefault(name, GroupCount())
            count.peak = max(count.peak, len(held))
            count.seen.update(connections[inode] for inode in held)
