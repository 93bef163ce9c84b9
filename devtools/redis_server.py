"""A throwaway Redis server on loopback for tests: :class:`RedisServer`.

Debian's ``redis-server`` on ``127.0.0.1``, on a free port, with a random password, without
persistence (nothing is written but the log) and with its working directory in a fresh temporary
folder that :meth:`RedisServer.stop` removes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import redis

from flux_provider.testing.lifecycle import require_started

from .scratch_server import ScratchServer
from .session_process import SessionProcess

__all__ = ["RedisServer", "RedisServerError"]

_POLL_INTERVAL = 0.1


class RedisServerError(RuntimeError):
    """``redis-server`` is missing, exited, or did not answer in time."""


class RedisServer(ScratchServer):
    """``redis-server`` in a session of its own, answering on :attr:`url`.

    Args:
        log_path: Where the server log goes. By default it is in the temporary folder and goes
            with it; pass a path to keep it.
        timeout: Seconds the server may take to answer a ``PING`` after start.
    """

    log_name = "redis.log"

    def __init__(self, *, log_path: Path | None = None, timeout: float = 30.0) -> None:
        super().__init__(log_path, timeout)
        self._process: SessionProcess | None = None

    @property
    def url(self) -> str:
        """``redis://:<password>@127.0.0.1:<port>/0`` (a Celery broker URL as it is)."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid (also its session id); ``None`` when it is not started."""
        return self._process.pid if self._process is not None else None

    @property
    def process(self) -> SessionProcess:
        """The running server process."""
        return require_started(self._process, "the Redis server is not started")

    def start(self) -> RedisServer:
        """Start the server and wait until it answers.

        Raises:
            RedisServerError: It is not installed, exited, or did not answer within ``timeout``.
        """
        if self._process is not None:
            raise RedisServerError("already started")
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("no redis-server on PATH (apt-get install redis-server)")
        try:
            folder = self._make_folder()
            self._process = SessionProcess(
                "redis-server",
                [
                    binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--requirepass",
                    self.password,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(folder),
                    "--logfile",
                    str(self.log_path),
                    "--daemonize",
                    "no",
                ],
                folder / "redis-server.out",
                cwd=folder,
            ).start()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.returncode is not None:
                raise RedisServerError(
                    f"redis-server exited with {self.process.returncode}\n{self.process.tail()}"
                )
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError as error:
                if time.monotonic() > deadline:
                    raise RedisServerError(
                        f"redis-server did not answer in {self.timeout:.0f}s: {error}\n"
                        f"{self.process.tail()}"
                    ) from error
            time.sleep(_POLL_INTERVAL)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s) and remove the folder."""
        process, self._process = self._process, None
        if process is not None:
            process.stop(timeout)
        self._remove_folder()

    def client(self, db: int = 0) -> redis.Redis:
        """A client of database ``db`` (bytes in, bytes out); close it yourself."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, db=db, socket_timeout=10
        )

    def snapshot(self) -> dict[str, Any]:
        """Every key of every database and its value, decoded as text, for searching.

        Keys are ``"<db>:<key>"``. Strings become ``str``, lists ``list[str]``, hashes
        ``dict[str, str]``, sets sorted ``list[str]``, sorted sets ``list[(member, score)]``,
        streams ``list[(id, dict)]``; bytes that are not UTF-8 are backslash-escaped.
        """
        found: dict[str, Any] = {}
        with self.client() as client:
            databases = int(client.config_get("databases")["databases"])
        for db in range(databases):
            with self.client(db) as client:
                for key in client.scan_iter(count=1000):
                    found[f"{db}:{_text(key)}"] = _value(client, key)
        return found


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)


def _value(client: Any, key: bytes) -> Any:
    # redis-py types every command as sync-or-async; this client is the sync one.
    kind = _text(client.type(key))
    if kind == "string":
        return _text(client.get(key))
    if kind == "list":
        return [_text(item) for item in client.lrange(key, 0, -1)]
    if kind == "hash":
        return {_text(field): _text(value) for field, value in client.hgetall(key).items()}
    if kind == "set":
        return sorted(_text(member) for member in client.smembers(key))
    if kind == "zset":
        return [
            (_text(member), score) for member, score in client.zrange(key, 0, -1, withscores=True)
        ]
    if kind == "stream":
        return [
            (_text(entry_id), {_text(f): _text(v) for f, v in fields.items()})
            for entry_id, fields in client.xrange(key)
        ]
    return None  # gone since the scan, or a module type
