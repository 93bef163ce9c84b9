"""F12 through real Airflow: the triggerer crashes mid-poll and another triggerer resumes the wait.

The deferrable ``flux_text_to_image`` DAG runs in a real ``airflow standalone`` against the fake
API in the test process. Once the task is deferred and the first triggerer's
``FluxTaskTrigger`` has polled, every ``airflow triggerer`` process of the standalone (the job
process and its forked trigger runner) is SIGKILLed, like a crashed pod. Standalone does not
restart dead components, so the test starts a spare ``airflow triggerer`` on the same database.
With ``[triggerer] job_heartbeat_sec = 2`` and ``triggerer_health_check_threshold = 10`` the dead
job's heartbeat goes stale within seconds, the spare one adopts the orphaned trigger row and
re-creates the trigger from its stored kwargs. The test then proves that the re-created trigger
polled the SAME flux task (no second submission, same trigger row, same absolute deadline), and
that the task finished in its first try once the fake task was completed.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devtools.metadata_rows import TriggerRow, decode_trigger_kwargs
from devtools.session_process import SessionProcess
from devtools.sessions import process_alive, process_stat
from devtools.standalone import StandaloneAirflow, session_processes
from flux_provider.api.config import DEFAULT_WAIT_TIMEOUT
from flux_provider.testing import FakeFluxServer
from flux_provider.testing.wire import CREATE_PATH, INFO_PATH
from tests.conftest import API_KEY, standalone_airflow
from tests.support.compat import logged_by

pytestmark = pytest.mark.timeout(600)

DAG_ID = "flux_text_to_image"
TASK_ID = "generate_hero_image"
TRIGGER_CLASSPATH = "flux_provider.triggers.task.FluxTaskTrigger"
TRIGGER_LOGGER = "flux_provider.triggers.task.FluxTaskTrigger"
# Long enough that the fake task is surely still running when the spare triggerer polls it, even
# on a loaded machine; the test ends it with ``complete()`` instead of waiting.
FAKE_TASK_DURATION = 300.0
# A live triggerer heartbeats every 2 s; one silent for 10 s is dead and loses its triggers.
RESTART_ENV = {
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
}
DEFER_TIMEOUT = 180.0
HANDOVER_TIMEOUT = 150.0
RUN_TIMEOUT = 180.0
KILL_TIMEOUT = 20.0
POLL_EVERY = 0.5

T = TypeVar("T")


# ---------------------------------------------------------------------------- processes


def _is_triggerer(argv: list[str]) -> bool:
    """``argv`` runs ``airflow triggerer`` (the job process or its forked trigger runner)."""
    if "triggerer" not in argv:
        return False
    return any(Path(arg).name == "airflow" for arg in argv[: argv.index("triggerer")])


def _parent(pid: int) -> int | None:
    """The parent PID of ``pid`` (``None`` if it is gone)."""
    fields = process_stat(pid)
    return int(fields[1]) if fields is not None else None


def _spare_triggerer(standalone: StandaloneAirflow) -> SessionProcess:
    """A second ``airflow triggerer`` on the standalone's database, in a session of its own.

    It gets the standalone's environment (so the same database, logs folder, connection and
    settings) and ``--skip-serve-logs``; its output goes to ``spare-triggerer.log`` in the
    standalone's home. Stopping it (also ``__exit__``) SIGTERMs its session, waits a bounded
    time and SIGKILLs whatever is left, the forked trigger runner included.
    """
    return standalone.session_process(
        "spare-triggerer",
        ["triggerer", "--skip-serve-logs"],
        standalone.home / "spare-triggerer.log",
    )


def _crash_triggerers(standalone: StandaloneAirflow) -> list[int]:
    """SIGKILL every ``airflow triggerer`` process standalone started; wait until they are gone.

    Returns:
        The killed PIDs (the triggerer job process and its trigger runner).
    """
    assert standalone.pid is not None
    found = {pid for pid, argv in session_processes(standalone.pid).items() if _is_triggerer(argv)}
    assert found, f"no airflow triggerer in session {standalone.pid}"
    # The job process first, so it never sees its trigger runner die and cannot shut down cleanly.
    victims = sorted(found, key=lambda pid: (_parent(pid) in found, pid))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_for(
        lambda: not any(process_alive(pid) for pid in victims),
        KILL_TIMEOUT,
        f"the killed triggerer processes {victims} to disappear",
        standalone.tail,
    )
    return victims


# ---------------------------------------------------------------------------- polling


def _wait_for(
    probe: Callable[[], T | None], timeout: float, what: str, diagnostics: Callable[[], str]
) -> T:
    """Call ``probe`` every half second until it returns something truthy; that value.

    Raises:
        AssertionError: Still nothing after ``timeout`` seconds (with ``diagnostics()``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}\n{diagnostics()}"
            )
        time.sleep(POLL_EVERY)


# ---------------------------------------------------------------------------- metadata DB


def _fernet_key(standalone: StandaloneAirflow) -> str:
    """The ``[core] fernet_key`` the standalone encrypts trigger kwargs with (empty: plain)."""
    key = standalone.env.get("AIRFLOW__CORE__FERNET_KEY")
    if key is None:
        config = configparser.ConfigParser(interpolation=None)
        config.read(standalone.home / "airflow.cfg")
        key = config.get("core", "fernet_key", fallback="")
    return key


def _trigger_rows(standalone: StandaloneAirflow) -> dict[int, TriggerRow]:
    """Every trigger row, read from the SQLite metadata database through a read-only handle."""
    key = _fernet_key(standalone)
    uri = f"{(standalone.home / 'airflow.db').as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        rows = db.execute("SELECT id, classpath, kwargs, triggerer_id FROM trigger").fetchall()
    return {
        int(trigger_id): TriggerRow(
            int(trigger_id), classpath, decode_trigger_kwargs(stored, key), triggerer_id
        )
        for trigger_id, classpath, stored, triggerer_id in rows
    }


# ---------------------------------------------------------------------------- logs


def _trigger_logs(standalone: StandaloneAirflow, run_id: str) -> dict[int, Path]:
    """The run's per-trigger log files (``attempt=1.log.trigger.<job id>.log``) by job id."""
    attempt_dir = Path(f"dag_id={DAG_ID}/run_id={run_id}/task_id={TASK_ID}")
    found: dict[int, Path] = {}
    for path in standalone.trigger_log_files():
        match = re.fullmatch(r"attempt=1\.log\.trigger\.(\d+)\.log", path.name)
        if match and path.relative_to(standalone.logs_folder).parent == attempt_dir:
            found[int(match.group(1))] = path
    return found


def _records(path: Path | None) -> list[dict[str, Any]]:
    """The JSON log records of a trigger log file (a torn last line is skipped)."""
    if path is None or not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def _polls_logged(records: list[dict[str, Any]], flux_task_id: str) -> list[str]:
    """The trigger's "Flux task <id> is <state> after ..." lines for ``flux_task_id``."""
    pattern = re.compile(rf"Flux task {re.escape(flux_task_id)} is \w+ after ")
    return [
        str(record["event"])
        for record in records
        if logged_by(record, TRIGGER_LOGGER) and pattern.match(str(record.get("event", "")))
    ]


def _starts_logged(records: list[dict[str, Any]], trigger_id: int) -> list[str]:
    """The triggerer's "trigger <name> (ID <trigger_id>) starting" lines."""
    pattern = re.compile(rf"trigger .*\(ID {trigger_id}\) starting")
    return [str(r["event"]) for r in records if pattern.fullmatch(str(r.get("event", "")))]


def _fired(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The triggerer's "Trigger fired event" records."""
    return [record for record in records if record.get("event") == "Trigger fired event"]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def fake_flux() -> Iterator[FakeFluxServer]:
    """The fake API; its tasks run long, the test completes them explicitly."""
    with FakeFluxServer(api_key=API_KEY, duration=FAKE_TASK_DURATION) as server:
        yield server


@pytest.fixture
def standalone(tmp_path: Path, fake_flux: FakeFluxServer) -> Iterator[StandaloneAirflow]:
    """A standalone Airflow whose triggerers heartbeat fast and are declared dead quickly."""
    with standalone_airflow(tmp_path / "airflow-home", fake_flux, RESTART_ENV) as sa:
        yield sa


# ---------------------------------------------------------------------------- the case


def test_f12_triggerer_restart_mid_poll_resumes_the_same_flux_task(
    standalone: StandaloneAirflow, fake_flux: FakeFluxServer, tmp_path: Path
) -> None:
    output_dir = tmp_path / "images"
    run_id = standalone.trigger_dag(DAG_ID, conf={"output_dir": str(output_dir)})
    ti_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"

    def diagnostics() -> str:
        states = {ti["task_id"]: ti["state"] for ti in standalone.task_instances(DAG_ID, run_id)}
        return (
            f"task instances: {states}; fake stats: {fake_flux.stats.create_requests} creates, "
            f"{fake_flux.stats.poll_requests} polls\n{standalone.tail()}\n"
            f"{standalone.triggerer_log()}"
        )

    # 1. The task submitted once and deferred; the first triggerer's trigger polled the task.
    def deferred_and_polled() -> tuple[dict[str, Any], str] | None:
        assert standalone.running, standalone.tail()
        ti = standalone.api("GET", ti_path)
        triggerer_id = (ti.get("trigger") or {}).get("triggerer_id")
        if ti["state"] != "deferred" or triggerer_id is None or len(fake_flux.tasks) != 1:
            return None
        [flux_task_id] = fake_flux.tasks
        log = _trigger_logs(standalone, run_id).get(int(triggerer_id))
        return (ti, flux_task_id) if _polls_logged(_records(log), flux_task_id) else None

    ti, flux_task_id = _wait_for(
        deferred_and_polled, DEFER_TIMEOUT, "a deferred task whose trigger polled", diagnostics
    )
    trigger_id = int(ti["trigger"]["id"])
    first_job = int(ti["trigger"]["triggerer_id"])
    row_before = _trigger_rows(standalone)[trigger_id]
    assert row_before.classpath == TRIGGER_CLASSPATH
    assert row_before.triggerer_id == first_job
    assert row_before.kwargs["flux_task_id"] == flux_task_id

    # 2. Crash: SIGKILL the standalone's triggerer job process and its trigger runner.
    killed = _crash_triggerers(standalone)
    assert len(killed) >= 1
    killed_at = time.time()
    polls_at_kill = fake_flux.stats.poll_requests

    # 3. A new triggerer adopts the orphaned trigger once the dead job's heartbeat is stale,
    #    re-creates it from the stored kwargs and polls the same flux task.
    with _spare_triggerer(standalone) as spare:

        def handed_over() -> int | None:
            assert standalone.running, standalone.tail()
            assert spare.running, spare.tail()
            current = standalone.api("GET", ti_path)
            assert current["state"] == "deferred", current
            triggerer_id = (current.get("trigger") or {}).get("triggerer_id")
            if triggerer_id in (None, first_job) or fake_flux.stats.poll_requests <= polls_at_kill:
                return None
            log = _trigger_logs(standalone, run_id).get(int(triggerer_id))
            return int(triggerer_id) if _polls_logged(_records(log), flux_task_id) else None

        second_job = _wait_for(
            handed_over,
            HANDOVER_TIMEOUT,
            "the spare triggerer to adopt the trigger and poll",
            lambda: f"{spare.tail()}\n{diagnostics()}",
        )
        row_after = _trigger_rows(standalone)[trigger_id]
        polls_before_completion = fake_flux.stats.poll_requests

        # 4. The generation ends; the re-created trigger fires and the worker resumes the task.
        fake_flux.complete(flux_task_id)
        state = standalone.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
        assert state == "success", f"{spare.tail()}\n{diagnostics()}"
        triggerer_jobs = standalone.api(
            "GET", "/api/v2/jobs", params={"job_type": "TriggererJob", "limit": 100}
        )

    # The run needed no retry and paid once: one create, every poll for that one task.
    [final] = standalone.task_instances(DAG_ID, run_id)
    assert (final["state"], final["try_number"]) == ("success", 1)
    stats = fake_flux.stats
    assert (stats.create_requests, stats.tasks_created) == (1, 1)
    assert [r.path for r in stats.requests if r.method == "POST"] == [CREATE_PATH]
    polled = [r.query.get("task_id") for r in stats.requests if r.path == INFO_PATH]
    assert set(polled) == {flux_task_id}
    assert polls_at_kill < polls_before_completion < stats.poll_requests

    # The spare triggerer is a different, live triggerer job than the one that died.
    assert second_job != first_job
    jobs = {job["id"]: job for job in triggerer_jobs["jobs"]}
    assert jobs[second_job]["state"] == "running"
    # The first one crashed: it never recorded an end (a clean shutdown would have).
    assert (jobs[first_job]["state"], jobs[first_job]["end_date"]) == ("running", None)
    assert jobs[second_job]["start_date"] > jobs[first_job]["start_date"]

    # Same trigger row, handed from the dead job to the new one with identical kwargs: the
    # absolute deadline was fixed when the task deferred (before the crash) and kept.
    assert row_after.id == row_before.id
    assert (row_before.triggerer_id, row_after.triggerer_id) == (first_job, second_job)
    assert row_after.classpath == TRIGGER_CLASSPATH
    assert row_after.kwargs == row_before.kwargs
    deadline = row_after.kwargs["deadline"]
    created_at = fake_flux.tasks[flux_task_id].created_at
    assert created_at + DEFAULT_WAIT_TIMEOUT <= deadline < killed_at + DEFAULT_WAIT_TIMEOUT

    # One log per triggerer job: both ran the same trigger and polled the same flux task; only
    # the new one fired.
    logs = _trigger_logs(standalone, run_id)
    assert set(logs) == {first_job, second_job}, standalone.triggerer_log()
    first, second = _records(logs[first_job]), _records(logs[second_job])
    assert _starts_logged(first, trigger_id), standalone.triggerer_log()
    assert _starts_logged(second, trigger_id), standalone.triggerer_log()
    assert _polls_logged(first, flux_task_id), standalone.triggerer_log()
    assert _polls_logged(second, flux_task_id), standalone.triggerer_log()
    assert _fired(first) == [], standalone.triggerer_log()
    [fired] = _fired(second)
    assert flux_task_id in str(fired["result"])

    # The worker submitted once, deferred once and resumed with the re-created trigger's event.
    task_log = standalone.task_log(DAG_ID, run_id, TASK_ID, 1)
    assert task_log.count(f"Submitted flux task {flux_task_id}") == 1, task_log
    assert task_log.count(f"Deferring: polling flux task {flux_task_id}") == 1, task_log
    result = standalone.xcom(DAG_ID, run_id, TASK_ID)
    assert (result["flux_task_id"], result["state"]) == (flux_task_id, "success")
    [stored] = result["stored"]
    [image] = output_dir.iterdir()
    assert stored["location"].endswith(image.name)
    assert image.stat().st_size == stored["bytes"]
