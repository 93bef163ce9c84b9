"""The distributed harness itself: every component runs, a deferrable DAG runs through Celery,
and stopping (also after a failed or interrupted start) leaves no process behind.

The module's tests share one instance and run in order; the last one stops it.
"""

from __future__ import annotations

import _thread
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from devtools.distributed import DistributedAirflow, DistributedAirflowError
from devtools.sessions import process_alive, session_processes
from flux_provider.testing import FakeFluxServer
from tests.conftest import API_KEY
from tests.e2e.distributed.conftest import distributed_airflow
from tests.support.fake import port_refuses

pytestmark = pytest.mark.timeout(600)

DAG_ID = "flux_text_to_image"
TASK_ID = "generate_hero_image"
# Start-up measured at ~25 s on two idle cores; the harness promises under two minutes.
STARTUP_BUDGET = 120.0


def _sessions_of(airflow: DistributedAirflow) -> dict[str, int]:
    """Every session the instance started: its components, Redis and the PostgreSQL server."""
    sessions = {
        name: component.session
        for name, component in airflow.components.items()
        if component.session is not None
    }
    # pg_ctl starts the server in a session of its own, led by the postmaster.
    for name, pid in (("redis", airflow.redis.pid), ("postgres", airflow.postgres.pid)):
        if pid is not None:
            sessions[name] = pid
    return sessions


def _left_over(airflow: DistributedAirflow, sessions: dict[str, int]) -> dict[str, object]:
    """What still runs of ``sessions`` and of the PostgreSQL server (whose children each lead
    a session of their own).
    """
    left: dict[str, object] = {
        name: found for name, session in sessions.items() if (found := session_processes(session))
    }
    if server := airflow.postgres.processes():
        left["postgres server"] = server
    return left


def test_every_component_runs(distributed: DistributedAirflow) -> None:
    assert distributed.startup_seconds is not None
    assert distributed.startup_seconds < STARTUP_BUDGET
    expected = {"api-server", "scheduler", "dag-processor", "triggerer-1", "triggerer-2"}
    assert set(distributed.components) == expected | {"worker-1"}
    assert all(component.running for component in distributed.components.values())

    # Two triggerer jobs, each run by its own process, both heartbeating.
    jobs = distributed.triggerer_job_ids()
    assert {job.component for job in jobs.values()} == {"triggerer-1", "triggerer-2"}, jobs
    now = datetime.now(timezone.utc)
    for job in jobs.values():
        assert job.component is not None
        assert job.pid == distributed.components[job.component].pid
        assert job.pid is not None
        assert process_alive(job.pid)
        assert job.latest_heartbeat is not None
        assert now - job.latest_heartbeat < timedelta(seconds=10), job

    # The Celery worker said it is ready and runs its pool (one child per slot).
    worker = distributed.components["worker-1"]
    assert re.search(r"worker-1@\S+ ready\.", worker.log_path.read_text())
    assert len(worker.processes()) >= 1 + 4, worker.processes()

    # Every log of every process is listed, PostgreSQL's and Redis's included.
    logs = {path.name for path in distributed.log_files()}
    assert {f"{name}.log" for name in distributed.components} <= logs
    assert {"db-migrate.log", "postgres.log", "redis.log"} <= logs


def test_deferrable_dag_runs_through_celery(
    distributed: DistributedAirflow, fake_flux: FakeFluxServer
) -> None:
    run_id = distributed.trigger_dag(DAG_ID)
    ti_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"
    triggerer_jobs = {distributed.job_id("triggerer-1"), distributed.job_id("triggerer-2")}

    def deferred_to_a_triggerer() -> dict[str, Any] | None:
        ti: dict[str, Any] = distributed.api("GET", ti_path)
        claimed = (ti.get("trigger") or {}).get("triggerer_id") is not None
        return ti if ti["state"] == "deferred" and claimed else None

    ti = distributed.wait_until(deferred_to_a_triggerer, 180, "the task to defer to a triggerer")
    # The first generation of the module's fake API: nothing has submitted one before.
    [flux_task_id] = fake_flux.tasks
    row = distributed.trigger_rows()[int(ti["trigger"]["id"])]
    assert row.classpath == "flux_provider.triggers.task.FluxTaskTrigger"
    assert row.kwargs["flux_task_id"] == flux_task_id
    assert row.triggerer_id in triggerer_jobs
    assert API_KEY not in repr(row.kwargs)

    distributed.wait_until(
        lambda: distributed.deferral_released(DAG_ID, run_id, TASK_ID, 1),
        120,
        "the scheduler to hear that the deferring workload ended",
    )
    fake_flux.complete(flux_task_id)
    assert distributed.wait_for_run(DAG_ID, run_id, timeout=180) == "success", distributed.tail()

    assert (fake_flux.stats.create_requests, fake_flux.stats.tasks_created) == (1, 1)
    result = distributed.xcom(DAG_ID, run_id, TASK_ID)
    assert (result["flux_task_id"], result["state"]) == (flux_task_id, "success")
    [url] = result["result_urls"]
    assert url.startswith(f"{fake_flux.base_url}/")
    [ti] = distributed.task_instances(DAG_ID, run_id)
    assert (ti["state"], ti["try_number"]) == ("success", 1)
    # A Celery worker ran both halves: the submission and the resumption after the trigger ...
    worker_log = distributed.components["worker-1"].log_path.read_text()
    executed = re.findall(
        rf"Executing workload in Celery: .*run_id={re.escape(run_id)}", worker_log
    )
    assert len(executed) == 2, worker_log
    # ... and the trigger ran in the triggerer that held its row, which wrote the trigger's log.
    attempt_dir = Path(f"dag_id={DAG_ID}/run_id={run_id}/task_id={TASK_ID}")
    [trigger_log] = [
        path
        for path in distributed.trigger_log_files()
        if path.relative_to(distributed.logs_folder).parent == attempt_dir
    ]
    assert trigger_log.name == f"attempt=1.log.trigger.{row.triggerer_id}.log"
    assert flux_task_id in trigger_log.read_text()


def test_a_killed_component_comes_back(distributed: DistributedAirflow) -> None:
    triggerer = distributed.components["triggerer-2"]
    old_job = distributed.job_id("triggerer-2")
    assert len(triggerer.processes()) >= 2  # the job process and its trigger runner

    killed = distributed.kill("triggerer-2")

    assert set(killed) >= {triggerer.pid}
    assert not any(process_alive(pid) for pid in killed)
    assert triggerer.processes() == {}
    # The crashed job's row stays "running"; only its heartbeat goes stale.
    assert old_job in distributed.triggerer_job_ids()
    with pytest.raises(DistributedAirflowError, match="is running"):
        distributed.start_component("triggerer-1")

    distributed.start_component("triggerer-2")

    new_job = distributed.job_id("triggerer-2")
    assert new_job is not None
    assert old_job is not None
    assert new_job > old_job
    jobs = distributed.triggerer_job_ids()
    assert (jobs[new_job].component, jobs[new_job].pid) == ("triggerer-2", triggerer.pid)
    assert triggerer.running

    # A restart stops the worker gracefully and waits until the new one is ready.
    worker = distributed.components["worker-1"]
    old_pid = worker.pid
    distributed.restart("worker-1")
    assert worker.running
    assert worker.pid != old_pid
    assert len(re.findall(r"worker-1@\S+ ready\.", worker.log_path.read_text())) == 2


def test_stop_leaves_no_process(distributed: DistributedAirflow) -> None:
    sessions = _sessions_of(distributed)
    assert set(sessions) == {*distributed.components, "redis", "postgres"}
    assert all(session_processes(session) for session in sessions.values()), sessions
    assert len(distributed.postgres.processes()) > 1

    distributed.stop()

    assert _left_over(distributed, sessions) == {}
    assert port_refuses(distributed.api_port)
    assert port_refuses(distributed.postgres.port)
    assert port_refuses(distributed.redis.port)
    distributed.stop()  # idempotent


def _stopped_after_failure(
    airflow: DistributedAirflow, start: Callable[[], object]
) -> dict[str, object]:
    """Start ``airflow`` through ``start`` (which must fail); what is left of its sessions."""
    seen: dict[str, int] = {}
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            seen.update(_sessions_of(airflow))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        start()
    finally:
        watching.set()
        watcher.join(timeout=10)
    assert {"postgres", "redis", "api-server", "scheduler"} <= set(seen), seen
    return _left_over(airflow, seen)


def test_failed_start_stops_everything_it_started(
    tmp_path: Path, fake_flux: FakeFluxServer
) -> None:
    # Only the Celery worker reads [celery] pool: it exits while everything else is starting.
    airflow = distributed_airflow(
        tmp_path / "home", fake_flux, extra_env={"AIRFLOW__CELERY__POOL": "no-such-pool"}
    )

    def start() -> None:
        with pytest.raises(DistributedAirflowError, match="worker-1 exited"):
            airflow.start()

    assert _stopped_after_failure(airflow, start) == {}
    assert airflow.postgres.folder is None
    assert airflow.redis.folder is None


def test_ctrl_c_during_start_stops_everything_it_started(
    tmp_path: Path, fake_flux: FakeFluxServer
) -> None:
    airflow = distributed_airflow(tmp_path / "home", fake_flux)

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 120
        while not airflow.components["scheduler"].running and time.monotonic() < deadline:
            time.sleep(0.2)
        _thread.interrupt_main()

    def start() -> None:
        threading.Thread(target=interrupt_once_running, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            airflow.start()

    assert _stopped_after_failure(airflow, start) == {}
    assert airflow.postgres.folder is None
