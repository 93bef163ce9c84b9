"""A throwaway PostgreSQL cluster on loopback for tests: :class:`PostgresCluster`.

It uses the server of Debian's ``postgresql`` package (the newest version under
``/usr/lib/postgresql/<version>/bin``), initialises a cluster in a fresh temporary folder, listens
on ``127.0.0.1`` only, on a free port, with its unix socket inside that folder, and is tuned for
tests, not for durability (``fsync``, ``synchronous_commit`` and ``full_page_writes`` off).
The superuser and its database are both ``airflow``; connections over TCP need the random
password in :attr:`PostgresCluster.url`.

PostgreSQL refuses to run as root: under root, ``initdb``, ``pg_ctl`` and the server run as the
``postgres`` user (through ``runuser``), and the folder belongs to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg2

from flux_provider.testing.lifecycle import require_started

from .scratch_server import ScratchServer
from .sessions import live_processes

__all__ = ["PostgresCluster", "PostgresError", "postgres_bin_dir"]

POSTGRES_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
TEST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Every Airflow component keeps a pool of connections, and each task process opens more.
    "max_connections": "300",
}
_COMMAND_TIMEOUT = 120.0


class PostgresError(RuntimeError):
    """A PostgreSQL command failed; carries its output and the server log's tail."""


def postgres_bin_dir(root: Path = POSTGRES_ROOT) -> Path:
    """The ``bin`` folder of the newest PostgreSQL under ``root`` that has ``initdb``.

    Raises:
        PostgresError: None is installed (Debian's ``postgresql`` package provides one).
    """
    found = []
    for initdb in root.glob("*/bin/initdb"):
        version = initdb.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version):
            found.append((tuple(int(part) for part in version.split(".")), initdb.parent))
    if not found:
        raise PostgresError(f"no PostgreSQL server under {root} (apt-get install postgresql)")
    return max(found)[1]


class PostgresCluster(ScratchServer):
    """A PostgreSQL server of its own in a temporary folder, removed again by :meth:`stop`.

    Args:
        log_path: Where the server log goes (appended to). By default it is in the temporary
            folder and goes with it; pass a path to keep it.
        settings: ``postgresql.conf`` settings on top of :data:`TEST_SETTINGS`.
        timeout: Seconds each start, restart or stop may take.
    """

    user = "airflow"
    database = "airflow"
    log_name = "postgres.log"

    def __init__(
        self,
        *,
        log_path: Path | None = None,
        settings: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(log_path, timeout)
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self._bin: Path | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``airflow`` database (``postgresql+psycopg2://...``)."""
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}"
            f"/{self.database}"
        )

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self._folder() / "data"

    @property
    def pid(self) -> int | None:
        """The server's (postmaster's) pid from ``postmaster.pid``; ``None`` when not started.

        ``pg_ctl`` starts it in a session of its own, so this is also that session's id.
        """
        folder = self.folder
        if folder is None:
            return None
        try:
            return int((folder / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def cluster_name(self) -> str:
        """``cluster_name``: the server's own processes show it in their titles."""
        return f"flux-test-{self.port}"

    def processes(self) -> dict[int, list[str]]:
        """The server's live processes (the postmaster and its children): pid -> argv.

        Each child runs in a session of its own; they are found by the cluster name in their
        process titles (``postgres: <cluster_name>: checkpointer``).
        """
        title = f"postgres: {self.cluster_name}: "
        postmaster = self.pid
        return {
            pid: argv
            for pid, _, argv in live_processes()
            if pid == postmaster or (argv and argv[0].startswith(title))
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PostgresCluster:
        """Initialise the cluster, start the server and create the ``airflow`` database.

        Raises:
            PostgresError: A step failed; whatever was started is stopped and removed first.
        """
        if self.folder is not None:
            raise PostgresError("already started")
        try:
            self._bin = postgres_bin_dir()
            self._hand_to_server_user(self._make_folder())
            self._initdb()
            self._pg_ctl("start", "-p", str(self._bin / "postgres"))
            with contextlib.closing(self.connect("postgres")) as connection:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute(f'CREATE DATABASE "{self.database}"')
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: the server stops (cutting every connection) and starts."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        """Fast shutdown, then remove the folder; also after a failed or partial start.

        If a fast shutdown fails, an immediate one follows, then SIGKILL to the server.
        """
        if self.folder is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._shut_down()
        finally:
            self._remove_folder()

    def _shut_down(self) -> None:
        for mode in ("fast", "immediate"):
            with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                self._pg_ctl("stop", "-m", mode)
                return
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ use

    def connect(self, database: str | None = None) -> Any:
        """A new psycopg2 connection to ``database`` (default: ``airflow``); close it yourself."""
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            connect_timeout=10,
        )

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement in the ``airflow`` database (committed); the rows it returned."""
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall() if cursor.description is not None else []
        return [tuple(row) for row in rows]

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        with (
            contextlib.closing(self.connect()) as connection,
            connection,
            connection.cursor() as cursor,
        ):
            yield cursor

    def dump(self) -> str:
        """A plain-text ``pg_dump`` of the ``airflow`` database."""
        bin_dir = self._bin_dir()
        result = self._run(
            [
                str(bin_dir / "pg_dump"),
                "--host=127.0.0.1",
                f"--port={self.port}",
                f"--username={self.user}",
                f"--dbname={self.database}",
                "--format=plain",
                "--no-password",
            ],
            env={**os.environ, "PGPASSWORD": self.password},
            capture=True,
        )
        return result.stdout.decode()

    # ------------------------------------------------------------------ commands

    def _initdb(self) -> None:
        folder = self._folder()
        bin_dir = self._bin_dir()
        password_file = folder / "password"
        password_file.write_text(self.password)
        self._hand_to_server_user(password_file)
        try:
            self._run(
                self._as_server_user(
                    str(bin_dir / "initdb"),
                    f"--pgdata={self.data_dir}",
                    f"--username={self.user}",
                    f"--pwfile={password_file}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",
                ),
                capture=True,
            )
        finally:
            password_file.unlink()
        settings = {
            **self.settings,
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(folder),
            "cluster_name": self.cluster_name,
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# devtools.postgres\n")
            for name, value in settings.items():
                quoted = value.replace("'", "''")
                conf.write(f"{name} = '{quoted}'\n")

    def _pg_ctl(self, action: str, *options: str) -> None:
        """``pg_ctl <action>``, waiting for it; the server's output goes to :attr:`log_path`."""
        command = self._as_server_user(
            str(self._bin_dir() / "pg_ctl"),
            action,
            f"--pgdata={self.data_dir}",
            "--wait",
            f"--timeout={int(self.timeout)}",
            *options,
        )
        with self.log_path.open("ab") as log:
            # pg_ctl hands its stdout to the server it starts: the server log is this file.
            self._run(command, stdout=log)

    def _run(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout: Any = None,
        capture: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            command,
            cwd=self.folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else stdout,
            stderr=subprocess.PIPE,
            timeout=self.timeout + _COMMAND_TIMEOUT,
            check=False,
            # A Ctrl-C in the terminal reaches the test, which then stops the server itself.
            start_new_session=True,
        )
        if result.returncode != 0:
            output = (result.stderr or b"").decode(errors="replace")
            if capture:
                output = (result.stdout or b"").decode(errors="replace") + output
            raise PostgresError(
                f"{' '.join(command)} exited with {result.returncode}:\n{output}\n{self.tail()}"
            )
        return result

    def _bin_dir(self) -> Path:
        return require_started(self._bin, f"the {type(self).__name__} is not started")

    @staticmethod
    def _as_server_user(*command: str) -> list[str]:
        if os.geteuid() != 0:
            return list(command)
        return ["runuser", "-u", SERVER_USER, "--", *command]

    @staticmethod
    def _hand_to_server_user(path: Path) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SERVER_USER)
            os.chown(path, owner.pw_uid, owner.pw_gid)
