"""Driving a test Airflow from outside: its REST API (``/api/v2``), its CLI and its processes.

:class:`AirflowApi` is what :class:`~devtools.standalone.StandaloneAirflow` and
:class:`~devtools.distributed.DistributedAirflow` share: a JWT from the simple auth
manager, DAG runs triggered and awaited through the public API, task instances, XComs and task
logs read back, ``airflow <command>`` run with the instance's environment, and the wait until the
API server reports the scheduler, triggerer and DAG processor healthy.
"""

from __future__ import annotations

import abc
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

import httpx

from flux_provider.testing.lifecycle import StartStop
from flux_provider.testing.loopback import free_loopback_ports

from .session_process import SessionProcess
from .standalone_logs import log_tail, render_log_entry, trigger_log_files, workload_reported

__all__ = ["HEALTHY_COMPONENTS", "TERMINAL_RUN_STATES", "AirflowApi", "AirflowHarnessError"]

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
HEALTHY_COMPONENTS = ("scheduler", "triggerer", "dag_processor")
POLL_INTERVAL = 0.5
_MIGRATE_TIMEOUT = 300.0
_Found = TypeVar("_Found")


class AirflowHarnessError(RuntimeError):
    """Start-up failed, a wait timed out, or a component died; carries a log tail."""


class AirflowApi(StartStop):
    """A test Airflow in ``home`` with its API server at ``api_url``, run with ``env``.

    Subclasses set :attr:`env`, start and stop the processes, open the API client with
    :meth:`_open_api` once the API server is spawned, and say what :meth:`tail` shows and how
    :meth:`_check_alive` notices a dead instance.
    """

    error: ClassVar[type[AirflowHarnessError]] = AirflowHarnessError
    env: dict[str, str]

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: Mapping[str, str] | None,
        startup_timeout: float,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """Place the instance: its home and DAGs folder, and free loopback ports to listen on.

        ``credentials`` (user name, password) make the simple auth manager ask for them: one
        admin user who signs in (the UI's login form, ``POST /auth/token``). Without them
        everyone is an admin.
        """
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.credentials = credentials
        self.api_port, self.worker_log_port, self.trigger_log_port = free_loopback_ports(3)
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self._client: httpx.Client | None = None

    # ------------------------------------------------------------------ what subclasses say

    @abc.abstractmethod
    def _check_alive(self) -> None:
        """Raise :attr:`error` if the instance is not started or a process of it died."""

    @abc.abstractmethod
    def tail(self, lines: int = 60) -> str:
        """The last lines of the instance's main log (for error messages)."""

    @property
    @abc.abstractmethod
    def scheduler_log_path(self) -> Path:
        """The file the scheduler's output goes to."""

    # ------------------------------------------------------------------ commands

    @property
    def airflow_bin(self) -> Path:
        """The real ``airflow`` console script of the running interpreter's environment."""
        return Path(sys.executable).parent / "airflow"

    @property
    def logs_folder(self) -> Path:
        """``[logging] base_log_folder``: task logs and per-trigger logs."""
        return self.home / "logs"

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

    def session_process(self, name: str, args: Sequence[str], log_path: Path) -> SessionProcess:
        """``airflow <args>`` with this instance's environment as a (not yet started) process.

        Its output goes to ``log_path``; it runs in a session of its own when started.
        """
        return SessionProcess(
            name, [str(self.airflow_bin), *args], log_path, env=self.env, cwd=self.home
        )

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

    @property
    def passwords_file(self) -> Path:
        """The simple auth manager's passwords (when the instance has :attr:`credentials`)."""
        return self.home / "simple_auth_manager_passwords.json"

    def prepare_home(self) -> None:
        """Create ``home`` and what the processes read from it before they start."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.credentials is not None:
            user, password = self.credentials
            self.passwords_file.write_text(json.dumps({user: password}))
            self.passwords_file.chmod(0o600)

    def _migrate(self, log_path: Path) -> None:
        """``airflow db migrate``, its output appended to ``log_path``."""
        with log_path.open("ab") as log:
            log.write(b"=== airflow db migrate ===\n")
            log.flush()
            try:
                subprocess.run(
                    **self._command(["db", "migrate"]),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=_MIGRATE_TIMEOUT,
                    check=True,
                    start_new_session=True,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                log.flush()
                raise self.error(
                    f"airflow db migrate failed: {error}\n{log_tail(log_path, 60)}"
                ) from error

    # ------------------------------------------------------------------ health

    def _open_api(self) -> None:
        self._client = httpx.Client(base_url=self.api_url, timeout=30.0)

    def _close_api(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def health(self) -> tuple[bool, Any]:
        """Whether the API server reports every component of :data:`HEALTHY_COMPONENTS` healthy.

        Also returns what it answered (the health document, an HTTP status or the connection
        error), for messages.
        """
        try:
            response = self._http().get("/api/v2/monitor/health", timeout=10.0)
        except httpx.TransportError as error:
            return False, repr(error)
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        answer = response.json()
        healthy = all(
            (answer.get(name) or {}).get("status") == "healthy" for name in HEALTHY_COMPONENTS
        )
        return healthy, answer

    def _wait_healthy(self, timeout: float) -> None:
        last: list[Any] = [None]

        def healthy() -> bool:
            reported, last[0] = self.health()
            return reported

        self.wait_until(healthy, timeout, "healthy components", lambda: f"last: {last[0]}")

    def wait_until(
        self,
        probe: Callable[[], _Found | None],
        timeout: float,
        what: str,
        diagnostics: Callable[[], str] | None = None,
    ) -> _Found:
        """Call ``probe`` every half second until it returns something truthy; that value.

        Before each call the instance must still run (:meth:`_check_alive`), so a wait ends as
        soon as a component dies.

        Raises:
            AirflowHarnessError: Nothing truthy after ``timeout`` seconds; the message names
                ``what``, adds ``diagnostics()`` and the log tail.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                details = f"; {diagnostics()}" if diagnostics is not None else ""
                raise self.error(
                    f"timed out after {timeout:.0f}s waiting for {what}{details}\n{self.tail()}"
                )
            time.sleep(POLL_INTERVAL)

    # ------------------------------------------------------------------ REST API

    def _http(self) -> httpx.Client:
        if self._client is None:
            raise self.error("not started")
        return self._client

    def token(self) -> str:
        """A JWT for the public API: signed in with :attr:`credentials` when there are some,
        else ``GET /auth/token`` (allowed in all-admins mode)."""
        if self.credentials is not None:
            user, password = self.credentials
            response = self._http().post(
                "/auth/token", json={"username": user, "password": password}
            )
        else:
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

        def parsed() -> dict[str, Any] | None:
            response = self.request("GET", f"/api/v2/dags/{dag_id}")
            if response.status_code == 200:
                details = self.request("GET", f"/api/v2/dags/{dag_id}/details")
                return dict(response.json()) if details.status_code == 200 else None
            if response.status_code != 404:
                response.raise_for_status()
            return None

        return self.wait_until(
            parsed,
            timeout,
            f"DAG {dag_id} to be parsed",
            lambda: f"import errors: {self.api('GET', '/api/v2/importErrors')}",
        )

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
            AirflowHarnessError: Still not finished after ``timeout`` seconds (the message lists
                the task instance states) or the instance died.
        """

        def ended() -> str | None:
            state = str(self.dag_run(dag_id, run_id)["state"])
            return state if state in TERMINAL_RUN_STATES else None

        def states() -> str:
            tasks = self.task_instances(dag_id, run_id)
            return f"tasks: { {ti['task_id']: ti['state'] for ti in tasks} }"

        return self.wait_until(ended, timeout, f"run {dag_id}/{run_id} to end", states)

    def deferral_released(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> bool:
        """Whether the scheduler has heard that the workload which deferred this try ended.

        Airflow reports the end of the deferring workload under the same task-instance key as
        the resumed one: if that report arrives while the resumed task runs, the scheduler
        takes it for a task that died and marks it up for retry (apache/airflow#72716). A test
        that ends the generation itself waits for this before letting the trigger fire.
        """
        return workload_reported(
            self.scheduler_log_path, dag_id, task_id, run_id, try_number, map_index
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances as the REST API returns them."""
        page = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(page["task_instances"])

    def xcom(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str = "return_value",
        map_index: int = -1,
    ) -> Any:
        """The deserialized value of one XCom entry."""
        entry = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true", "map_index": map_index},
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

    def trigger_log_files(self) -> list[Path]:
        """Per-trigger log files the triggerers wrote (``<task log>.trigger.<job id>.log``)."""
        return trigger_log_files(self.logs_folder)
