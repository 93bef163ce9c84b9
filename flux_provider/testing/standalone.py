"""Run a real ``airflow standalone`` (API server, scheduler, DAG processor, triggerer) for tests.

:class:`StandaloneAirflow` starts every Airflow component as separate processes in a private
``AIRFLOW_HOME`` with a SQLite database and the LocalExecutor, waits until the API server reports
the scheduler, triggerer and DAG processor healthy, and then drives it through the public REST API
(``/api/v2``) with a JWT from the simple auth manager::

    with StandaloneAirflow(home=tmp_path, dags_folder=REPO / "example_dags") as airflow:
        run_id = airflow.trigger_dag("flux_text_to_image")
        assert airflow.wait_for_run("flux_text_to_image", run_id, timeout=180) == "success"

The instance is isolated from the caller's Airflow settings, listens on loopback only, and runs
no scheduled runs: :mod:`flux_provider.testing.standalone_env` says how.

The whole process tree runs in its own session; :meth:`StandaloneAirflow.stop` (also called on
``__exit__`` and when start-up fails) sends SIGTERM to the process group, waits a bounded time,
then SIGKILLs whatever is left in the session (task runners move to process groups of their own).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import httpx

from .lifecycle import StartStop
from .loopback import free_loopback_ports
from .sessions import session_processes, stop_session
from .standalone_env import standalone_env, write_serve_logs_shim
from .standalone_logs import (
    log_tail,
    render_log_entry,
    trigger_log_files,
    triggerer_log,
    workload_reported,
)

__all__ = [
    "StandaloneAirflow",
    "StandaloneAirflowError",
    "free_loopback_ports",
    "session_processes",
    "stop_session",
]

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
HEALTHY_COMPONENTS = ("scheduler", "triggerer", "dag_processor")
_POLL_INTERVAL = 0.5


class StandaloneAirflowError(RuntimeError):
    """Start-up failed, a wait timed out, or the standalone process died; carries a log tail."""


class StandaloneAirflow(StartStop):
    """A running ``airflow standalone`` in ``home``, driven through its REST API.

    Args:
        home: A fresh, private ``AIRFLOW_HOME`` (e.g. pytest's ``tmp_path``). The SQLite database,
            ``airflow.cfg``, ``logs/`` and the standalone output (``standalone.log``) live here.
        dags_folder: The DAGs folder (``[core] dags_folder``).
        extra_env: Extra environment for every Airflow process (connections as
            ``AIRFLOW_CONN_*``, config overrides as ``AIRFLOW__SECTION__KEY``); applied last.
        startup_timeout: Seconds to wait for the API server and healthy components.
        serve_logs: Start the scheduler's and triggerer's log servers (they bind all interfaces).
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 180.0,
        serve_logs: bool = False,
    ) -> None:
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.serve_logs = serve_logs
        self.api_port, self.worker_log_port, self.trigger_log_port = free_loopback_ports(3)
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.log_path = self.home / "standalone.log"
        self.env = standalone_env(self)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._client: httpx.Client | None = None

    # ------------------------------------------------------------------ environment

    @property
    def airflow_bin(self) -> Path:
        """The real ``airflow`` console script of the running interpreter's environment."""
        return Path(sys.executable).parent / "airflow"

    @property
    def logs_folder(self) -> Path:
        """``[logging] base_log_folder``: task logs and per-trigger logs."""
        return self.home / "logs"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StandaloneAirflow:
        """Migrate the database if needed, start standalone and wait until it is healthy.

        Raises:
            StandaloneAirflowError: Migration failed, standalone exited, or it did not become
                healthy within ``startup_timeout``. Everything started is stopped first.
        """
        if self._process is not None:
            raise StandaloneAirflowError("already started")
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.serve_logs:
            write_serve_logs_shim(self.home, self.airflow_bin)
        self._log_file = self.log_path.open("ab")
        try:
            if not (self.home / "airflow.db").exists():
                self._migrate()
            self._process = self.spawn(["standalone"], self._log_file)
            self._client = httpx.Client(base_url=self.api_url, timeout=30.0)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _command(self, args: Sequence[str]) -> dict[str, Any]:
        """What every ``airflow <args>`` run shares: the script, the home and the environment."""
        return {
            "args": [str(self.airflow_bin), *args],
            "cwd": self.home,
            "env": self.env,
            "stdin": subprocess.DEVNULL,
        }

    def spawn(self, args: Sequence[str], output: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start ``airflow <args>`` with this instance's environment, writing to ``output``.

        It runs in a session of its own, so :func:`~.sessions.stop_session` stops it and all
        it forks.
        """
        return subprocess.Popen(
            **self._command(args),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _migrate(self) -> None:
        assert self._log_file is not None
        self._log_file.write(b"=== airflow db migrate ===\n")
        self._log_file.flush()
        try:
            subprocess.run(
                **self._command(["db", "migrate"]),
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=True,
                start_new_session=True,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            raise StandaloneAirflowError(
                f"airflow db migrate failed: {error}\n{self.tail()}"
            ) from error
        self._log_file.write(b"=== airflow standalone ===\n")
        self._log_file.flush()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last: Any = None
        while True:
            self._check_alive()
            try:
                response = self._http().get("/api/v2/monitor/health", timeout=10.0)
                if response.status_code == 200:
                    last = response.json()
                    if all(
                        (last.get(name) or {}).get("status") == "healthy"
                        for name in HEALTHY_COMPONENTS
                    ):
                        return
                else:
                    last = f"HTTP {response.status_code}"
            except httpx.TransportError as error:
                last = repr(error)
            if time.monotonic() > deadline:
                raise StandaloneAirflowError(
                    f"not healthy after {self.startup_timeout:.0f}s (last: {last})\n{self.tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL the session.

        Idempotent; safe to call when start-up failed half way.
        """
        process, self._process = self._process, None
        if process is not None:
            stop_session(process, timeout)
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def running(self) -> bool:
        """The standalone process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

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
        code = self._process.poll()
        if code is not None:
            raise StandaloneAirflowError(f"airflow standalone exited with {code}\n{self.tail()}")

    # ------------------------------------------------------------------ REST API

    def _http(self) -> httpx.Client:
        if self._client is None:
            raise StandaloneAirflowError("not started")
        return self._client

    def token(self) -> str:
        """A JWT for the public API (``GET /auth/token``, allowed in all-admins mode)."""
        response = self._http().get("/auth/token")
        response.raise_for_status()
        return str(response.json()["access_token"])

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """An authenticated request to the API server; the response is returned as is."""
        client = self._http()
        if "authorization" not in client.headers:
            client.headers["authorization"] = f"Bearer {self.token()}"
        return client.request(method, path, json=json, params=params, headers=headers)

    def api(self, method: str, path: str, **options: Any) -> Any:
        """An authenticated JSON request (e.g. ``api("GET", "/api/v2/dags")``); decoded body.

        ``options`` are :meth:`request`'s (``json``, ``params``, ``headers``).

        Raises:
            httpx.HTTPStatusError: The answer was not 2xx (the body is in the message).
        """
        response = self.request(method, path, **options)
        if response.is_error:
            raise httpx.HTTPStatusError(
                f"{method} {path} -> {response.status_code}: {response.text}",
                request=response.request,
                response=response,
            )
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed and serialized ``dag_id``; its DAG record."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            response = self.request("GET", f"/api/v2/dags/{dag_id}")
            if response.status_code == 200:
                details = self.request("GET", f"/api/v2/dags/{dag_id}/details")
                if details.status_code == 200:
                    return dict(response.json())
            elif response.status_code != 404:
                response.raise_for_status()
            if time.monotonic() > deadline:
                errors = self.api("GET", "/api/v2/importErrors")
                raise StandaloneAirflowError(
                    f"DAG {dag_id} not parsed after {timeout:.0f}s; import errors: {errors}\n"
                    f"{self.tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def trigger_dag(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        logical_date: datetime | None = None,
        parse_timeout: float = 120.0,
    ) -> str:
        """Wait for ``dag_id`` to be parsed, unpause it and start a manual run; the run id.

        ``logical_date`` defaults to now, so templates using ``ds`` render.
        """
        self.wait_for_dag(dag_id, timeout=parse_timeout)
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        when = logical_date or datetime.now(timezone.utc)
        run = self.api(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": when.isoformat(), "conf": dict(conf or {})},
        )
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The DAG run record."""
        return dict(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180.0) -> str:
        """Poll until the run is ``success`` or ``failed``; that state.

        Raises:
            StandaloneAirflowError: Still not finished after ``timeout`` seconds (the message
                lists the task instance states) or standalone died.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            state = str(self.dag_run(dag_id, run_id)["state"])
            if state in TERMINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                states = {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}
                raise StandaloneAirflowError(
                    f"run {dag_id}/{run_id} still {state} after {timeout:.0f}s; tasks: {states}\n"
                    f"{self.tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def deferral_released(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> bool:
        """Whether the scheduler has heard that the workload which deferred this try ended.

        Airflow reports the end of the deferring workload under the same task-instance key as
        the resumed one: if that report arrives while the resumed task runs, the scheduler
        takes it for a task that died and marks it up for retry (apache/airflow#72716). A test
        that ends the generation itself waits for this before letting the trigger fire.
        """
        return workload_reported(self.log_path, dag_id, task_id, run_id, try_number)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances as the REST API returns them."""
        page = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(page["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The deserialized value of one XCom entry."""
        entry = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true"},
        )
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log for ``try_number`` through the REST logs endpoint, one line an entry.

        Airflow's reader merges the task's own log with the log the triggerer wrote while the
        task was deferred.
        """
        page = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
        )
        return "\n".join(render_log_entry(entry) for entry in page.get("content") or [])

    # ------------------------------------------------------------------ files and CLI

    def trigger_log_files(self) -> list[Path]:
        """Per-trigger log files the triggerer wrote (``<task log>.trigger.<job id>.log``)."""
        return trigger_log_files(self.logs_folder)

    def triggerer_log(self) -> str:
        """The triggerer's output: its lines from ``standalone.log``, then every trigger log file.

        Each part starts with a ``==> <source> <==`` header line.
        """
        return triggerer_log(self.log_path, self.logs_folder)

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of ``standalone.log`` (for error messages)."""
        return log_tail(self.log_path, lines)

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` with this instance's environment; output captured as text.

        Raises:
            subprocess.CalledProcessError: Non-zero exit.
            subprocess.TimeoutExpired: Still running after ``timeout`` seconds (it is killed).
        """
        return subprocess.run(
            **self._command(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
