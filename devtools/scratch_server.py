"""What a server started for a test and thrown away after it has: :class:`ScratchServer`.

A free port on ``127.0.0.1``, a random password (other users of the machine reach loopback
too), a temporary folder for its files that :meth:`~ScratchServer.stop` removes, and a log.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from flux_provider.testing.lifecycle import StartStop, require_started
from flux_provider.testing.loopback import free_loopback_ports

from .standalone_logs import log_tail

__all__ = ["ScratchServer"]


class ScratchServer(StartStop):
    """A loopback server with a port, a password, a temporary folder and a log file.

    Args:
        log_path: Where the server log goes. By default it is in the temporary folder and goes
            with it; pass a path to keep it.
        timeout: Seconds a start or stop may take.
    """

    #: The log file's name in the temporary folder, when no ``log_path`` is given.
    log_name: ClassVar[str] = "server.log"

    def __init__(self, log_path: Path | None, timeout: float) -> None:
        (self.port,) = free_loopback_ports(1)
        self.password = secrets.token_hex(16)
        self.timeout = timeout
        self._log_path = log_path
        self.folder: Path | None = None

    @property
    def log_path(self) -> Path:
        """The server log."""
        if self._log_path is not None:
            return self._log_path
        return self._folder() / self.log_name

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log."""
        if self._log_path is None and self.folder is None:
            return "(no server log)"
        return log_tail(self.log_path, lines)

    def _folder(self) -> Path:
        """The temporary folder (it exists only while the server is started)."""
        return require_started(self.folder, f"the {type(self).__name__} is not started")

    def _make_folder(self) -> Path:
        self.folder = Path(tempfile.mkdtemp(prefix=f"flux-{type(self).__name__.lower()}-"))
        return self.folder

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
