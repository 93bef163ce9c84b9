"""B5 distributed batch: 1,000 deferred generations across two triggerers on PostgreSQL.

A :class:`~devtools.distributed.DistributedAirflow` (CeleryExecutor with one
worker, Redis broker, PostgreSQL, two triggerers) runs ``flux_bench_stored_batch``
(``benchmarks/dags``): 1,000 mapped deferrable generations, each stored on disk, against the
fake API in a process of its own making every generation last T = 30 s. Half way through
(once half the generations are done and a triggerer holds at least 10 triggers) the triggerer
holding the most triggers is SIGKILLed; once the other holds its triggers it is started again,
as a supervisor would. Figures:

* ``wall_over_t``: from the first submit (the earliest ``created_at`` the API gave) to the last
  stored image (the newest file's modification time), divided by T.
* ``polls_per_generation``: the triggers' polls (every poll the fake received minus the
  operator's one check before deferring) per generation; compared with B1's ``ours`` at
  N = 1000 of the same run when B1 ran (target: within 10 %).
* ``cpu_ms_per_poll``: CPU of both triggerers' processes (job process and trigger runner,
  ``/proc``) over the run, per trigger poll; with B1's ``ours`` CPU/poll as the baseline.
* ``connections``: per triggerer, the most connections to the fake held at once and the
  distinct ones seen (``/proc`` sampled every 0.5 s; target: <= 64).
* ``adoption_s``: from the SIGKILL to the moment every trigger the killed triggerer held (and
  that has not fired since) is held by the other (target: within the health-check threshold +
  10 s); the run must still succeed: 0 failed, 0 paid twice (creates == generations).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.fake_process import FakeApiProcess
from benchmarks.measure import process_cpu_seconds
from benchmarks.worker_slot import DAGS_FOLDER
from devtools.connections import ConnectionCensus
from devtools.distributed import DistributedAirflow
from devtools.sessions import session_processes

DAG_ID = "flux_bench_stored_batch"
TRIGGERERS = ("triggerer-1", "triggerer-2")
HEALTH_CHECK_THRESHOLD = 10.0
WORKER_SLOTS = 8
TARGET_CONNECTIONS = 64
TARGET_POLLS_DEVIATION = 0.10
TARGET_ADOPTION_MARGIN_S = 10.0
MIN_ORPHANS = 10


def _triggerer_sessions(airflow: DistributedAirflow) -> dict[str, list[int]]:
    return {
        name: [session]
        for name in TRIGGERERS
        if (session := airflow.components[name].session) is not None
    }


def _triggerer_cpu(airflow: DistributedAirflow) -> dict[int, float]:
    """CPU seconds so far of every process of both triggerers' sessions, by pid."""
    found: dict[int, float] = {}
    for sessions in _triggerer_sessions(airflow).values():
        for session in sessions:
            for pid in session_processes(session):
                if (seconds := process_cpu_seconds(pid)) is not None:
                    found[pid] = seconds
    return found


def _states(airflow: DistributedAirflow, run_id: str) -> Counter[str]:
    rows = airflow.postgres.query(
        "SELECT state, COUNT(*) FROM task_instance WHERE dag_id = %s AND run_id = %s"
        " AND task_id = 'generate' GROUP BY state",
        (DAG_ID, run_id),
    )
    return Counter({str(state): int(count) for state, count in rows})


def _half_done(states: Counter[str], count: int) -> bool:
    """Every mapped instance exists and half of them succeeded."""
    return sum(states.values()) >= count and states.get("success", 0) >= count // 2


def _held(airflow: DistributedAirflow) -> dict[str, list[int]]:
    """Each triggerer's FLUX triggers (ids) right now."""
    jobs = {airflow.job_id(name): name for name in TRIGGERERS}
    held: dict[str, list[int]] = {name: [] for name in TRIGGERERS}
    for row in airflow.trigger_rows().values():
        if row.classpath.startswith("flux_provider.") and row.triggerer_id in jobs:
            held[jobs[row.triggerer_id]].append(row.id)
    return held


def _holding(airflow: DistributedAirflow, least: int) -> dict[str, list[int]] | None:
    """The triggers held right now once one triggerer holds at least ``least`` of them.

    Half way through a batch the worker can be between waves (every trigger fired, the
    resumed tasks queued for a slot); a kill then would orphan nothing and time no adoption.
    """
    held = _held(airflow)
    return held if max(len(ids) for ids in held.values()) >= least else None


def _wait(airflow: DistributedAirflow, probe: Any, what: str, timeout: float) -> Any:
    return airflow.wait_until(probe, timeout, what)


def _run_batch(
    airflow: DistributedAirflow, count: int, output: Path, timeout: float
) -> tuple[str, str]:
    run_id = airflow.trigger_dag(DAG_ID, conf={"count": count, "output_dir": str(output)})
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=timeout)
    return run_id, state


def _first_submit(airflow: DistributedAirflow, run_id: str) -> float:
    """The earliest ``created_at`` (epoch s) in the run's results."""
    [(earliest,)] = airflow.postgres.query(
        "SELECT MIN((value->>'created_at')::float) FROM xcom WHERE dag_id = %s"
        " AND run_id = %s AND task_id = 'generate' AND key = 'return_value'",
        (DAG_ID, run_id),
    )
    return float(earliest)


def _orphans_adopted(
    airflow: DistributedAirflow, victim: str, survivor: str, orphans: set[int]
) -> bool:
    """Whether the survivor holds every orphan that still exists (fired ones are deleted)."""
    held = _held(airflow)
    rows = airflow.trigger_rows()
    return all(tid in held[survivor] for tid in orphans if tid in rows)


def measure(
    airflow: DistributedAirflow, fake: FakeApiProcess, count: int, duration: float, output: Path
) -> dict[str, Any]:
    """The batch, a triggerer SIGKILLed half way through and restarted once its triggers were
    adopted: wall / T, polls and CPU per poll, connections per triggerer, adoption."""
    fake.set_duration(duration)
    fake.take_stats()
    cpu_before = _triggerer_cpu(airflow)
    port = int(fake.base_url.rsplit(":", 1)[1])
    census = ConnectionCensus(port, lambda: _triggerer_sessions(airflow))
    cpu_of_the_killed: dict[int, float] = {}
    with census:
        run_id = airflow.trigger_dag(DAG_ID, conf={"count": count, "output_dir": str(output)})
        _wait(
            airflow,
            lambda: _half_done(_states(airflow, run_id), count),
            "half the batch done",
            3600,
        )
        held = _wait(airflow, lambda: _holding(airflow, MIN_ORPHANS), "a triggerer to hold", 900)
        victim = max(TRIGGERERS, key=lambda name: len(held[name]))
        survivor = next(name for name in TRIGGERERS if name != victim)
        orphans = set(held[victim])
        cpu_of_the_killed = {
            pid: seconds
            for pid, seconds in _triggerer_cpu(airflow).items()
            if pid in _session_pids(airflow, victim)
        }
        killed_at = time.monotonic()
        airflow.kill(victim)
        _wait(
            airflow,
            lambda: _orphans_adopted(airflow, victim, survivor, orphans),
            "the survivor to adopt every orphaned trigger",
            900,
        )
        adoption = time.monotonic() - killed_at
        airflow.start_component(victim)
        state = airflow.wait_for_run(DAG_ID, run_id, timeout=3600)
    cpu_after = _triggerer_cpu(airflow)
    stats = fake.take_stats()
    images = sorted(output.glob("*.png"), key=lambda path: path.stat().st_mtime)
    states = _states(airflow, run_id)
    trigger_polls = stats["poll_requests"] - stats["create_requests"]
    # The killed triggerer's processes are gone: their CPU up to the kill counts, read then.
    cpu = sum(cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after)
    cpu += sum(seconds - cpu_before.get(pid, 0.0) for pid, seconds in cpu_of_the_killed.items())
    wall = images[-1].stat().st_mtime - _first_submit(airflow, run_id) if images else float("nan")
    return {
        "state": state,
        "failed": count - states.get("success", 0),
        "creates": stats["create_requests"],
        "paid_twice": stats["create_requests"] - count,
        "images": len(images),
        "wall_s": wall,
        "wall_over_t": wall / duration,
        "trigger_polls": trigger_polls,
        "polls_per_generation": trigger_polls / count,
        "triggerer_cpu_s": cpu,
        "cpu_ms_per_poll": 1000 * cpu / trigger_polls if trigger_polls else float("nan"),
        "connections": {
            name: {"peak": counted.peak, "opened": counted.opened}
            for name, counted in census.counts.items()
        },
        "victim": victim,
        "orphans": len(orphans),
        "held_at_kill": {name: len(ids) for name, ids in held.items()},
        "adoption_s": adoption,
    }


def _session_pids(airflow: DistributedAirflow, name: str) -> set[int]:
    session = airflow.components[name].session
    return set(session_processes(session)) if session is not None else set()


def run(
    workdir: Path, *, count: int = 1000, duration: float = 30.0, b1: dict[str, Any] | None = None
) -> dict[str, Any]:
    """B5 on a fresh distributed Airflow; ``b1`` (this run's B1 results) gives the baselines."""
    with FakeApiProcess(duration=duration, log_path=workdir / "b5-fake.log") as fake:
        airflow = DistributedAirflow(
            home=workdir / "b5-home",
            dags_folder=DAGS_FOLDER,
            extra_env={"AIRFLOW_CONN_FLUX_DEFAULT": fake.connection_json()},
            worker_concurrency=WORKER_SLOTS,
            triggerer_health_check_threshold=HEALTH_CHECK_THRESHOLD,
        )
        with airflow:
            batch = measure(airflow, fake, count, duration, workdir / "b5-images")
            startup = airflow.startup_seconds
    baseline = _b1_ours(b1)
    return {
        "parameters": {
            "generations": count,
            "duration_s": duration,
            "worker_slots": WORKER_SLOTS,
            "health_check_threshold_s": HEALTH_CHECK_THRESHOLD,
        },
        "startup_s": startup,
        "batch": batch,
        "b1_polls_per_task": baseline.get("polls_per_task"),
        "b1_cpu_ms_per_poll": baseline.get("cpu_per_poll_ms"),
    }


def _b1_ours(b1: dict[str, Any] | None) -> dict[str, float]:
    """B1's ``ours`` at N = 1000 (ramped) in this run: polls per task and CPU ms per poll."""
    for size in (b1 or {}).get("sizes", []):
        if size.get("n") == 1000:
            ours = size.get("variants", {}).get("ours", {})
            return {key: ours[key] for key in ("polls_per_task", "cpu_per_poll_ms") if key in ours}
    return {}
