"""Run a real ``airflow standalone`` (API server, scheduler, DAG processor, triggerer) for tests.

:class:`StandaloneAirflow` starts every Airflow component as separate processes in a private
``AIRFLOW_HOME`` with a SQLite database and the LocalExecutor, waits until the API server reports
the scheduler, triggerer and DAG processor healthy, and then drives it through the public REST API
(``/api/v2``) with a JWT from the simple auth manager::

    with StandaloneAirflow(home=tmp_path, dags_folder=REPO / "example_dags") as airflow:
        run_id = airflow.trigger_dag("flux_text_to_image")
        assert airflow.wait_for_run("flux_text_to_image", run_id, timeout=180) == "success"

The instance is isolated from the caller's Airflow settings, listens on loopback only, and runs
no scheduled runs: :mod:`devtools.standalone_env` says how.

The whole process tree runs in its own session; :meth:`StandaloneAirflow.stop` (also called on
``__exit__`` and when start-up fails) sends SIGTERM to the process group, waits a bounded time,
then SIGKILLs whatever is left in the session (task runners move to process groups of their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flux_provider.testing.loopback import free_loopback_ports

from .airflow_api import HEALTHY_COMPONENTS, TERMINAL_RUN_STATES, AirflowApi, AirflowHarnessError
from .session_process import SessionProcess
from .sessions import session_processes, stop_session
from .standalone_env import standalone_env, write_serve_logs_shim
from .standalone_logs import log_tail, triggerer_log

__all__ = [
    "HEALTHY_COMPONENTS",
    "TERMINAL_RUN_STATES",
    "StandaloneAirflow",
    "StandaloneAirflowError",
    "free_loopback_ports",
    "session_processes",
    "stop_session",
]


class StandaloneAirflowError(AirflowHarnessError):
    """Start-up failed, a wait timed out, or the standalone process died; carries a log tail."""


class StandaloneAirflow(AirflowApi):
    """A running ``airflow standalone`` in ``home``, driven through its REST API.

    The REST API, CLI and wait methods are :class:`~devtools.airflow_api.AirflowApi`'s.

    Args:
        home: A fresh, private ``AIRFLOW_HOME`` (e.g. pytest's ``tmp_path``). The SQLite database,
            ``airflow.cfg``, ``logs/`` and the standalone output (``standalone.log``) live here.
        dags_folder: The DAGs folder (``[core] dags_folder``).
        extra_env: Extra environment for every Airflow process (connections as
            ``AIRFLOW_CONN_*``, config overrides as ``AIRFLOW__SECTION__KEY``); applied last.
        startup_timeout: Seconds to wait for the API server and healthy components.
        serve_logs: Start the scheduler's and triggerer's log servers (they bind all interfaces).
        credentials: (user, password) of the one admin who must sign in; without them everyone
            is an admin.
    """

    error = StandaloneAirflowError

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 180.0,
        serve_logs: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(home, dags_folder, extra_env, startup_timeout, credentials)
        self.serve_logs = serve_logs
        self.log_path = self.home / "standalone.log"
        self.env = standalone_env(self)
        self._process: SessionProcess | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StandaloneAirflow:
        """Migrate the database if needed, start standalone and wait until it is healthy.

        Raises:
            StandaloneAirflowError: Migration failed, standalone exited, or it did not become
                healthy within ``startup_timeout``. Everything started is stopped first.
        """
        if self._process is not None:
            raise StandaloneAirflowError("already started")
        self.prepare_home()
        if not self.serve_logs:
            write_serve_logs_shim(self.home, self.airflow_bin)
        try:
            if not (self.home / "airflow.db").exists():
                self._migrate(self.log_path)
            self._process = self.session_process("standalone", ["standalone"], self.log_path)
            self._process.start()
            self._open_api()
            self._wait_healthy(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL the session.

        Idempotent; safe to call when start-up failed half way.
        """
        process, self._process = self._process, None
        if process is not None:
            process.stop(timeout)
        self._close_api()

    @property
    def running(self) -> bool:
        """The standalone process was started and has not exited."""
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        """PID of the ``airflow standalone`` process, ``None`` before start and after stop.

        Standalone runs in a session of its own, so this is also the session id (and process
        group id) shared by the components it spawned: scheduler, triggerer, DAG processor, ...
        """
        return self._process.pid if self._process is not None else None

    def _check_alive(self) -> None:
        if self._process is None:
            raise StandaloneAirflowError("not started")
        code = self._process.returncode
        if code is not None:
            raise StandaloneAirflowError(f"airflow standalone exited with {code}\n{self.tail()}")

    # ------------------------------------------------------------------ logs

    @property
    def scheduler_log_path(self) -> Path:
        """``standalone.log``: standalone prefixes the scheduler's lines with its name."""
        return self.log_path

    def triggerer_log(self) -> str:
        """The triggerer's output: its lines from ``standalone.log``, then every trigger log file.

        Each part starts with a ``==> <source> <==`` header line.
        """
        return triggerer_log(self.log_path, self.logs_folder)

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of ``standalone.log`` (for error messages)."""
        return log_tail(self.log_path, lines)
