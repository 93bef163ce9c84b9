"""A real distributed Airflow on loopback for tests: :class:`DistributedAirflow`.

Every component is a process of its own, as on a cluster: the API server, the scheduler, the
DAG processor, two triggerers and one or two Celery workers, sharing a PostgreSQL metadata
database (:class:`~devtools.postgres.PostgresCluster`) and a Redis broker
(:class:`~devtools.redis_server.RedisServer`) started for it::

    with DistributedAirflow(home=tmp_path, dags_folder=REPO / "example_dags") as airflow:
        run_id = airflow.trigger_dag("flux_text_to_image")
        assert airflow.wait_for_run("flux_text_to_image", run_id) == "success"
        airflow.kill("triggerer-1")          # a crash: the whole session, SIGKILL
        airflow.start_component("triggerer-1")

It is driven through the REST API like
:class:`~devtools.standalone.StandaloneAirflow`
(:class:`~devtools.airflow_api.AirflowApi`). Each component runs in a session of
its own with its own log file in ``home`` (``scheduler.log``, ``triggerer-2.log``, ...), so a
fault test can kill one component with everything it forked. No component serves logs over
HTTP (``--skip-serve-logs``: those servers bind every interface); the API server reads task and
trigger logs from the shared ``logs/`` folder.

Triggerers start one after the other: the ``job`` table records no pid, so the new job row that
appears after a triggerer starts is how the harness knows which process runs which job.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from .airflow_api import AirflowApi, AirflowHarnessError
from .distributed_env import DistributedSettings, distributed_env
from .metadata_rows import TriggererJobRow, TriggerRow, decode_trigger_kwargs
from .postgres import PostgresCluster
from .redis_server import RedisServer
from .session_process import SessionProcess, SessionProcessError

__all__ = ["JOB_TYPES", "DistributedAirflow", "DistributedAirflowError"]

# The job table's job_type of each kind of component that runs an Airflow job.
JOB_TYPES: Mapping[str, str] = {
    "scheduler": "SchedulerJob",
    "dag-processor": "DagProcessorJob",
    "triggerer": "TriggererJob",
}
_WORKER_READY = re.compile(rb"@\S+ ready\.")


class DistributedAirflowError(AirflowHarnessError):
    """Start-up failed, a wait timed out, or a component died; carries log tails."""


def _kind(name: str) -> str:
    """``"triggerer"`` for ``"triggerer-2"``; other names are their own kind."""
    return re.sub(r"-\d+$", "", name)


class DistributedAirflow(AirflowApi):
    """Airflow with the CeleryExecutor, PostgreSQL and Redis, every component a process.

    Components (the keys of :attr:`components`): ``api-server``, ``scheduler``,
    ``dag-processor``, ``triggerer-1``, ``triggerer-2`` and ``worker-1`` (``worker-2`` with
    ``workers=2``).

    Args:
        home: A fresh, private ``AIRFLOW_HOME``: ``airflow.cfg``, ``logs/``, one log file per
            component, ``db-migrate.log``, ``postgres.log`` and ``redis.log``.
        dags_folder: The DAGs folder (``[core] dags_folder``).
        extra_env: Extra environment for every Airflow process (connections as
            ``AIRFLOW_CONN_*``, config overrides as ``AIRFLOW__SECTION__KEY``); applied last.
        workers: Celery workers (each ``airflow celery worker`` a session of its own).
        worker_concurrency: Task slots of each worker (``--concurrency``).
        parallelism: ``[core] parallelism`` (default: every slot of every worker).
        triggerer_heartbeat: ``[triggerer] job_heartbeat_sec``.
        triggerer_health_check_threshold: Seconds after which a silent triggerer is dead and
            its triggers are adopted by another.
        triggerer_capacity: ``[triggerer] capacity``.
        task_instance_heartbeat_timeout: Seconds after which a task whose worker went silent
            fails over (``[scheduler] task_instance_heartbeat_timeout``).
        startup_timeout: Seconds :meth:`start` (and :meth:`start_component`) may take.
        stop_timeout: Seconds each component gets to stop after SIGTERM before SIGKILL.
    """

    error = DistributedAirflowError

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: Mapping[str, str] | None = None,
        *,
        workers: int = 1,
        worker_concurrency: int = 4,
        parallelism: int | None = None,
        triggerer_heartbeat: float = 2.0,
        triggerer_health_check_threshold: float = 10.0,
        triggerer_capacity: int = 1000,
        task_instance_heartbeat_timeout: float = 20.0,
        startup_timeout: float = 120.0,
        stop_timeout: float = 20.0,
    ) -> None:
        if workers < 1 or worker_concurrency < 1:
            raise ValueError("at least one worker with at least one slot")
        super().__init__(home, dags_folder, extra_env, startup_timeout)
        self.stop_timeout = stop_timeout
        self.postgres = PostgresCluster(log_path=self.home / "postgres.log")
        self.redis = RedisServer(log_path=self.home / "redis.log")
        self.fernet_key = Fernet.generate_key().decode()
        self.settings = DistributedSettings(
            database_url=self.postgres.url,
            broker_url=self.redis.url,
            fernet_key=self.fernet_key,
            parallelism=parallelism or workers * worker_concurrency,
            worker_concurrency=worker_concurrency,
            triggerer_heartbeat=triggerer_heartbeat,
            triggerer_health_check_threshold=triggerer_health_check_threshold,
            triggerer_capacity=triggerer_capacity,
            task_instance_heartbeat_timeout=task_instance_heartbeat_timeout,
        )
        self.env = distributed_env(self, self.settings)
        self.migrate_log_path = self.home / "db-migrate.log"
        commands: dict[str, list[str]] = {
            "api-server": ["api-server"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer-1": ["triggerer", "--skip-serve-logs"],
            "triggerer-2": ["triggerer", "--skip-serve-logs"],
        }
        for number in range(1, workers + 1):
            commands[f"worker-{number}"] = [
                "celery",
                "worker",
                "--concurrency",
                str(worker_concurrency),
                "--skip-serve-logs",
                "--celery-hostname",
                f"worker-{number}@%h",
                "--without-mingle",
                "--without-gossip",
            ]
        self.components: dict[str, SessionProcess] = {
            name: self.session_process(name, args, self.home / f"{name}.log")
            for name, args in commands.items()
        }
        self.startup_seconds: float | None = None
        self._job_ids: dict[str, int] = {}
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> DistributedAirflow:
        """Start PostgreSQL and Redis, migrate, start every component and wait until all run.

        Ready means: the API server answers and reports the scheduler, triggerer and DAG
        processor healthy, each job-running component has its job row, and each Celery worker
        logged that it is ready. :attr:`startup_seconds` says how long it took.

        Raises:
            DistributedAirflowError: A step failed, a component exited, or not everything was
                ready within ``startup_timeout``. Everything started is stopped first.
        """
        if self._started:
            raise DistributedAirflowError("already started")
        self._started = True
        began = time.monotonic()
        try:
            self.prepare_home()
            self.postgres.start()
            self.redis.start()
            self._migrate(self.migrate_log_path)
            self._open_api()
            left = self.startup_timeout - (time.monotonic() - began)
            self._bring_up(list(self.components), left, healthy=True)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every component at once (SIGTERM to each session, a bounded wait, SIGKILL
        what is left), then Redis and PostgreSQL. Idempotent; safe after a failed start.
        """
        # The API server's graceful shutdown waits for open connections: close ours first.
        self._close_api()
        try:
            with ThreadPoolExecutor(max_workers=len(self.components)) as pool:
                for _ in pool.map(lambda c: c.stop(self.stop_timeout), self.components.values()):
                    pass
        finally:
            try:
                self.redis.stop()
            finally:
                self.postgres.stop()
                self._job_ids.clear()
                self._started = False

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 20.0) -> list[int]:
        """Send ``sig`` to every process of component ``name``'s session; wait until all ended.

        SIGKILL (the default) is a crash: for a triggerer the job process and its trigger
        runner die at once, for a worker the Celery parent, its pool children and their task
        processes. The component stays down (and is no longer watched) until
        :meth:`start_component` or :meth:`restart`. Returns the pids signalled.

        Raises:
            DistributedAirflowError: Something of the session still ran after ``timeout`` s.
        """
        try:
            return self._component(name).kill(sig, timeout)
        except SessionProcessError as error:
            raise DistributedAirflowError(str(error)) from error

    def start_component(self, name: str) -> None:
        """Start component ``name`` again (after :meth:`kill`) and wait until it is ready.

        Raises:
            DistributedAirflowError: It is running (use :meth:`restart`), or it was not ready
                within ``startup_timeout``.
        """
        if self._component(name).running:
            raise DistributedAirflowError(f"{name} is running; restart() stops it first")
        self._bring_up([name], self.startup_timeout, healthy=False)

    def restart(self, name: str) -> None:
        """Stop component ``name`` (SIGTERM, bounded wait, SIGKILL), start it, wait for it."""
        self._component(name).stop(self.stop_timeout)
        self.start_component(name)

    # ------------------------------------------------------------------ start-up

    def _bring_up(self, names: list[str], timeout: float, *, healthy: bool) -> None:
        """Start ``names`` and wait until each is ready (and, if ``healthy``, until the API
        reports every component healthy: other components may be down on purpose).

        Two components of one job type never wait for their job rows at the same time, so
        each new row belongs to the one component waiting.
        """
        queued = list(names)
        waiting: dict[str, int] = {}
        last: list[object] = [None]
        for name in names:
            self._job_ids.pop(name, None)

        def ready() -> bool:
            for name in list(queued):
                job_type = JOB_TYPES.get(_kind(name))
                if job_type and any(JOB_TYPES.get(_kind(other)) == job_type for other in waiting):
                    continue
                waiting[name] = self._spawn(name)
                queued.remove(name)
            for name, baseline in list(waiting.items()):
                if self._ready(name, baseline):
                    del waiting[name]
            if queued or waiting:
                return False
            if not healthy:
                return True
            reported, last[0] = self.health()
            return reported

        self.wait_until(
            ready,
            timeout,
            f"{', '.join(names)} to be ready",
            lambda: f"not ready: {sorted(waiting) + queued} (last health: {last[0]})",
        )

    def _spawn(self, name: str) -> int:
        """Start component ``name``; what :meth:`_ready` compares against to see it ready."""
        component = self.components[name]
        job_type = JOB_TYPES.get(_kind(name))
        if job_type is not None:
            [(baseline,)] = self.postgres.query(
                "SELECT COALESCE(MAX(id), 0) FROM job WHERE job_type = %s", (job_type,)
            )
        else:
            baseline = component.log_path.stat().st_size if component.log_path.exists() else 0
        component.start()
        return int(baseline)

    def _ready(self, name: str, baseline: int) -> bool:
        job_type = JOB_TYPES.get(_kind(name))
        if job_type is not None:
            claimed = set(self._job_ids.values())
            rows = self.postgres.query(
                "SELECT id FROM job WHERE job_type = %s AND id > %s ORDER BY id",
                (job_type, baseline),
            )
            new = [int(job_id) for (job_id,) in rows if int(job_id) not in claimed]
            if new:
                self._job_ids[name] = new[0]
            return bool(new)
        if _kind(name) == "worker":
            with self.components[name].log_path.open("rb") as log:
                log.seek(baseline)
                return _WORKER_READY.search(log.read()) is not None
        try:
            return self._http().get("/api/v2/monitor/health", timeout=5.0).status_code == 200
        except httpx.TransportError:
            return False

    def _check_alive(self) -> None:
        if not self._started:
            raise DistributedAirflowError("not started")
        for name, component in self.components.items():
            if component.crashed:
                raise DistributedAirflowError(
                    f"{name} exited with {component.returncode}\n{component.tail(40)}"
                )
        if self.redis.process.crashed:
            raise DistributedAirflowError(f"redis-server exited\n{self.redis.tail()}")

    def _component(self, name: str) -> SessionProcess:
        try:
            return self.components[name]
        except KeyError:
            raise DistributedAirflowError(
                f"no component {name!r}; there are {sorted(self.components)}"
            ) from None

    # ------------------------------------------------------------------ metadata database

    def triggerer_job_ids(self) -> dict[int, TriggererJobRow]:
        """The ``running`` TriggererJob rows by id, with the component and pid running each.

        A SIGKILLed triggerer's row stays ``running``: only its stale ``latest_heartbeat``
        tells that it is dead.
        """
        owners = {job_id: name for name, job_id in self._job_ids.items()}
        rows = self.postgres.query(
            "SELECT id, state, hostname, start_date, latest_heartbeat FROM job"
            " WHERE job_type = 'TriggererJob' AND state = 'running' ORDER BY id"
        )
        found: dict[int, TriggererJobRow] = {}
        for job_id, state, hostname, started, heartbeat in rows:
            owner = owners.get(int(job_id))
            found[int(job_id)] = TriggererJobRow(
                id=int(job_id),
                state=state,
                hostname=hostname,
                start_date=started,
                latest_heartbeat=heartbeat,
                component=owner,
                pid=self.components[owner].pid if owner is not None else None,
            )
        return found

    def job_id(self, name: str) -> int | None:
        """The id of the job row component ``name`` runs (``None``: none, or not a job runner)."""
        return self._job_ids.get(name)

    def trigger_rows(self) -> dict[int, TriggerRow]:
        """Every row of the ``trigger`` table by id, its kwargs decrypted with the Fernet key."""
        rows = self.postgres.query(
            "SELECT id, classpath, kwargs, triggerer_id FROM trigger ORDER BY id"
        )
        return {
            int(trigger_id): TriggerRow(
                id=int(trigger_id),
                classpath=str(classpath),
                kwargs=decode_trigger_kwargs(str(stored), self.fernet_key),
                triggerer_id=None if triggerer_id is None else int(triggerer_id),
            )
            for trigger_id, classpath, stored, triggerer_id in rows
        }

    # ------------------------------------------------------------------ logs

    def log_files(self) -> list[Path]:
        """Every log file of every process: components, migration, task and trigger logs
        (``logs/``), PostgreSQL's and Redis's.
        """
        named = [
            *(component.log_path for component in self.components.values()),
            self.migrate_log_path,
            self.postgres.log_path,
            self.redis.log_path,
        ]
        found = {path for path in named if path.is_file()}
        if self.logs_folder.exists():
            found.update(path for path in self.logs_folder.rglob("*") if path.is_file())
        return sorted(found)

    @property
    def scheduler_log_path(self) -> Path:
        """``scheduler.log``."""
        return self.components["scheduler"].log_path

    def tail(self, lines: int = 60) -> str:
        """The last lines of each started component's log (``lines // 4`` each, at least 10)."""
        each = max(10, lines // 4)
        return "\n".join(
            component.tail(each)
            for component in self.components.values()
            if component.pid is not None
        )
