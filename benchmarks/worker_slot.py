"""B3 worker slot: seconds a worker slot is held per image, deferrable or polling in the worker.

Method (Airflow's own timings only): a task instance keeps its ``start_date`` when it resumes
after a deferral, so its ``duration`` (``end_date - start_date``) spans every worker run *and*
the time spent deferred. Airflow's audit log (the ``log`` table, ``/api/v2/eventLogs``) records
a ``deferred`` event when a run hands over to the triggerer and a ``running`` event when a
run starts, so::

    slot seconds = duration - sum(resume "running" event - preceding "deferred" event)

The deferred gaps cover the triggerer's wait and the scheduler/executor hand-back; what is
left is the time worker processes held the try. The resumed run's process start before it
reports ``running`` (fork, supervisor set-up: tens of ms) falls in the gap, so deferrable
figures are a slight underestimate; DAG parsing is counted.

Two ways to run it:

* ``dag.test()`` (quick mode): the child process of :mod:`benchmarks.dag_test_child` (a fresh
  SQLite ``AIRFLOW_HOME``) runs both DAGs of ``benchmarks/dags`` in-process (the trigger runs
  inline); no executor, so no process start-up cost is in the figures.
* ``airflow standalone`` (full mode): real LocalExecutor and triggerer; several images per
  mode, started a few seconds apart; timings read over the REST API.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.fake_process import FakeApiProcess
from devtools.dags import load_dag

if TYPE_CHECKING:
    from devtools.standalone import StandaloneAirflow

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
DAG_IDS = {"deferrable": "flux_bench_slot_deferred", "worker": "flux_bench_slot_worker"}
TARGET_DEFERRABLE_S = 2.0
WARM_UP_DURATION = 0.5
RUN_EVENTS = ("running", "deferred", "success", "failed", "up_for_retry")


@dataclass(frozen=True)
class SlotTiming:
    """One task instance try: Airflow's duration, time deferred, and worker-slot time."""

    state: str
    duration_s: float
    deferred_s: float
    slot_s: float
    worker_runs: int


def as_datetime(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def slot_timing(
    state: str,
    start: datetime | str,
    end: datetime | str,
    events: Iterable[tuple[datetime | str, str]],
) -> SlotTiming:
    """Worker-slot time of one try from its start/end dates and its audit-log events."""
    gaps: list[float] = []
    deferred_at: datetime | None = None
    for when, event in sorted((as_datetime(w), e) for w, e in events):
        if event == "deferred":
            deferred_at = when
        elif event == "running" and deferred_at is not None:
            gaps.append((when - deferred_at).total_seconds())
            deferred_at = None
    duration = (as_datetime(end) - as_datetime(start)).total_seconds()
    deferred = sum(gaps)
    return SlotTiming(state, duration, deferred, duration - deferred, 1 + len(gaps))


def summarise(timings: Sequence[SlotTiming]) -> dict[str, Any]:
    """Median and max slot seconds (successful tries), and the per-image detail."""
    ok = [t for t in timings if t.state == "success"]
    slots = [t.slot_s for t in ok]
    return {
        "images": len(timings),
        "failures": len(timings) - len(ok),
        "slot_median_s": statistics.median(slots) if slots else math.nan,
        "slot_max_s": max(slots, default=math.nan),
        "duration_median_s": statistics.median([t.duration_s for t in ok]) if ok else math.nan,
        "worker_runs": sorted({t.worker_runs for t in ok}),
        "detail": [asdict(t) for t in timings],
    }


# ------------------------------------------------------------------ dag.test() (quick mode)


def dag_test_timing(dag_id: str) -> SlotTiming:
    """Run ``dag_id`` once with ``dag.test()`` in this process; its one task's slot timing."""
    from airflow.models.log import Log
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    run = load_dag(dag_id, DAGS_FOLDER).test()
    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
            )
        ).one()
        events = session.execute(
            select(Log.dttm, Log.event).where(
                Log.dag_id == dag_id, Log.run_id == run.run_id, Log.event.in_(RUN_EVENTS)
            )
        ).all()
        if ti.start_date is None or ti.end_date is None:
            return SlotTiming(str(ti.state), math.nan, math.nan, math.nan, 0)
        timeline: list[tuple[datetime | str, str]] = [(w, e) for w, e in events if w is not None]
        return slot_timing(str(ti.state), ti.start_date, ti.end_date, timeline)


def run_dag_test(fake: FakeApiProcess, duration: float) -> dict[str, Any]:
    """B3 under ``dag.test()`` in this process (set up by :mod:`benchmarks.dag_test_child`,
    which also ran the throwaway run): one image per mode, each task lasting ``duration``."""
    fake.set_duration(duration)
    fake.take_stats()
    results = {mode: summarise([dag_test_timing(dag)]) for mode, dag in DAG_IDS.items()}
    stats = fake.take_stats()
    return {
        "method": "dag.test() (in-process, trigger inline)",
        "duration_s": duration,
        "modes": results,
        "api_calls": stats["create_requests"] + stats["poll_requests"],
    }


# ------------------------------------------------------------------ airflow standalone


def standalone_timings(airflow: StandaloneAirflow, dag_id: str, run_id: str) -> list[SlotTiming]:
    """Slot timings of every task instance of a run, from the REST API (bounded paging)."""
    events_by_ti: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for page in range(100):
        batch = airflow.api(
            "GET",
            "/api/v2/eventLogs",
            params={
                "dag_id": dag_id,
                "run_id": run_id,
                "limit": 100,
                "offset": 100 * page,
                "order_by": "id",
            },
        )["event_logs"]
        for entry in batch:
            if entry["event"] in RUN_EVENTS:
                key = (
                    entry["task_id"],
                    entry["map_index"] if entry["map_index"] is not None else -1,
                )
                events_by_ti.setdefault(key, []).append((entry["when"], entry["event"]))
        if len(batch) < 100:
            break
    timings: list[SlotTiming] = []
    for page in range(100):
        tis = airflow.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
            params={"limit": 100, "offset": 100 * page},
        )["task_instances"]
        for ti in tis:
            if ti["operator"] != "FluxGenerateImageOperator":
                continue
            if ti["start_date"] is None or ti["end_date"] is None:
                timings.append(SlotTiming(str(ti["state"]), math.nan, math.nan, math.nan, 0))
                continue
            events = events_by_ti.get((ti["task_id"], ti["map_index"]), [])
            timings.append(slot_timing(str(ti["state"]), ti["start_date"], ti["end_date"], events))
        if len(tis) < 100:
            break
    return timings


def run_standalone(
    airflow: StandaloneAirflow,
    fake: FakeApiProcess,
    *,
    images: int = 3,
    stagger: float = 3.0,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """B3 on a running standalone: ``images`` runs per mode, started ``stagger`` s apart.

    A throwaway run of short tasks comes first: the API server's execution API and the
    executor's workers initialise on first use (seconds), which is not the operator's cost.
    """
    duration = fake.duration
    fake.set_duration(WARM_UP_DURATION)
    warm_ups = [airflow.trigger_dag(DAG_IDS[mode]) for mode in DAG_IDS]
    for mode, run_id in zip(DAG_IDS, warm_ups, strict=True):
        airflow.wait_for_run(DAG_IDS[mode], run_id, timeout=timeout)
    fake.set_duration(duration)
    fake.take_stats()
    runs: dict[str, list[str]] = {mode: [] for mode in DAG_IDS}
    for index in range(images):
        if index:
            time.sleep(stagger)
        for mode, dag_id in DAG_IDS.items():
            runs[mode].append(airflow.trigger_dag(dag_id))
    deadline = time.monotonic() + timeout
    modes: dict[str, Any] = {}
    for mode, dag_id in DAG_IDS.items():
        timings: list[SlotTiming] = []
        for run_id in runs[mode]:
            airflow.wait_for_run(dag_id, run_id, timeout=max(deadline - time.monotonic(), 1.0))
            timings.extend(standalone_timings(airflow, dag_id, run_id))
        modes[mode] = summarise(timings)
    stats = fake.take_stats()
    return {
        "method": "airflow standalone (LocalExecutor, real triggerer)",
        "duration_s": duration,
        "modes": modes,
        "api_calls": stats["create_requests"] + stats["poll_requests"],
    }
