"""B6 one batch task: 1,000 images as one ``FluxGenerateImageBatchOperator`` task, side by side
with the same 1,000 as mapped operators and with Airflow's own floor for mapped deferrable tasks.

Full mode runs four cases one after the other on one
:class:`~devtools.distributed.DistributedAirflow` (PostgreSQL, Redis, the CeleryExecutor with one
worker of 8 slots, two triggerers), every generation lasting T = 30 s at a fake API that runs in
a process of its own (:class:`~benchmarks.fake_process.FakeApiProcess`):

* ``batch`` (a): ``flux_bench_one_batch``, one batch task, ``max_in_flight=1000``, against a
  fake without a limit on tasks in flight;
* ``limited`` (b): ``flux_bench_one_batch_limited``, ``max_in_flight=24``, against a second fake
  that answers 429 above 24 tasks in flight (connection ``flux_limited``);
* ``mapped`` (c): ``flux_bench_stored_batch``, 1,000 mapped deferrable
  ``FluxGenerateImageOperator`` tasks, each image stored (as B5, without the kill);
* ``floor`` (d): ``flux_bench_floor``, 1,000 mapped ``DateTimeSensorAsync`` that each wait T
  from their own start in a triggerer and resume on a worker: no API, no image.

A throwaway batch of 2 images runs first (:func:`warm_up`). Figures per case (see
:func:`image_figures` and :func:`measure_case`):

* ``wall_over_t``: from the first submit (the earliest ``created_at`` in the fake's own
  records) to the last stored image (the newest file's modification time), over T; for the
  floor, from the first ``wait`` task instance's start to the last one's end.
* ``ready_to_stored``: per image, its file's modification time minus the moment the fake
  completed its task (the fake's own float time, ``created_at + duration``, not the API's whole
  seconds): p50, p95, max.
* ``slot_s``: worker-slot seconds of every task instance of the run (B3's method: each
  instance's duration minus its deferred gaps, from the audit log), in all and per image.
* ``api_calls_per_image``: creates (429s included), polls, balance and estimate calls the fake
  received, over the images; result downloads are counted apart (``image_requests``).
* ``peak_in_flight``, ``rate_limited_creates``: the most tasks in flight at the fake, and the
  creates it refused for its limit.
* ``paid_twice``: tasks created beyond one per image.
* ``triggerer_rss``: per triggerer, the peak RSS (``VmHWM``, reset at the start of the case) of
  the process of its session that grew most over its RSS at the reset, and that growth.

Quick mode (``make bench-quick``) runs case (a) with 100 images and T = 5 s under
``dag.test()`` in the child of :mod:`benchmarks.dag_test_child` (a fresh SQLite home, shared
with B3): no PostgreSQL, no Celery, the trigger run inline in that process (so its peak RSS
stands in for the triggerer's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.fake_process import FakeApiProcess, TaskTimes
from benchmarks.measure import (
    peak_rss_kib,
    percentile,
    process_rss_kib,
    reset_peak_rss,
    reset_process_peak_rss,
    rss_kib,
)
from benchmarks.worker_slot import DAGS_FOLDER, RUN_EVENTS, SlotTiming, slot_timing

DAG_IDS = {
    "batch": "flux_bench_one_batch",
    "limited": "flux_bench_one_batch_limited",
    "mapped": "flux_bench_stored_batch",
    "floor": "flux_bench_floor",
}
CASES = tuple(DAG_IDS)
BATCH_MAX_IN_FLIGHT = 1000
"""Case (a)'s ``max_in_flight`` (as ``flux_bench_one_batch`` sets it)."""
SERVICE_LIMIT = 24
"""The limited fake's tasks in flight, and case (b)'s ``max_in_flight``."""
WORKER_SLOTS = 8
HEALTH_CHECK_THRESHOLD = 10.0
TRIGGERERS = ("triggerer-1", "triggerer-2")
LIMITED_CONNECTION = "AIRFLOW_CONN_FLUX_LIMITED"
RUN_TIMEOUT = 3600.0
WARM_UP_DURATION = 0.5

TARGET_BATCH_WALL_OVER_T = 3.0
TARGET_LIMITED_MARGIN = 1.2
"""(b) may take this many times ``ceil(images / 24)`` generations in a row."""
TARGET_READY_TO_STORED_MAX_S = 60.0


def limited_target(images: int) -> float:
    """(b)'s target for ``wall_over_t``: 1.2 x ``ceil(images / 24)``."""
    return TARGET_LIMITED_MARGIN * math.ceil(images / SERVICE_LIMIT)


# ------------------------------------------------------------------ figures


def image_figures(
    stats: Mapping[str, Any],
    tasks: Mapping[str, TaskTimes],
    output: Path,
    count: int,
    duration: float,
) -> dict[str, Any]:
    """The figures of a case that stores images: ``stats`` are the fake's counters over the
    case, ``tasks`` the fake's records of the tasks created in it, ``output`` the folder."""
    stored = {
        path.name.rsplit("_", 1)[0]: path.stat().st_mtime for path in sorted(output.glob("*.png"))
    }
    ready = [
        mtime - ended
        for task_id, mtime in stored.items()
        if task_id in tasks and (ended := tasks[task_id].completed_at) is not None
    ]
    first = min((task.created_at for task in tasks.values()), default=math.nan)
    wall = max(stored.values(), default=math.nan) - first
    calls = sum(
        int(stats[key])
        for key in ("create_requests", "poll_requests", "balance_requests", "estimate_requests")
    )
    images = len(stored)
    return {
        "images": images,
        "failed": count - images,
        "wall_s": wall,
        "wall_over_t": wall / duration,
        "ready_to_stored_p50_s": percentile(ready, 50),
        "ready_to_stored_p95_s": percentile(ready, 95),
        "ready_to_stored_max_s": max(ready, default=math.nan),
        "ready_to_stored_measured": len(ready),
        "api_calls": calls,
        "api_calls_per_image": calls / images if images else math.nan,
        "creates": int(stats["tasks_created"]),
        "create_requests": int(stats["create_requests"]),
        "polls": int(stats["poll_requests"]),
        "image_requests": int(stats["image_requests"]),
        "paid_twice": int(stats["tasks_created"]) - count,
        "peak_in_flight": int(stats["peak_in_flight"]),
        "rate_limited_creates": int(stats["rate_limited_creates"]),
        "stats": dict(stats),
    }


def slot_figures(timings: Sequence[SlotTiming], images: int) -> dict[str, Any]:
    """Worker-slot seconds of every task instance of a run, in all and per image."""
    ran = [t for t in timings if not math.isnan(t.slot_s)]
    total = sum(t.slot_s for t in ran)
    return {
        "slot_s": total,
        "slot_s_per_image": total / images if images else math.nan,
        "task_instances": len(timings),
        "worker_runs": sum(t.worker_runs for t in ran),
        "not_succeeded": sum(1 for t in timings if t.state != "success"),
    }


def _timings(
    instances: Iterable[tuple[str, int, str, Any, Any]],
    events: Iterable[tuple[str, int, Any, str]],
) -> list[SlotTiming]:
    """Slot timings from (task_id, map_index, state, start, end) rows and audit-log events."""
    by_instance: dict[tuple[str, int], list[tuple[datetime | str, str]]] = {}
    for task_id, map_index, when, event in events:
        if when is not None:
            key = (str(task_id), -1 if map_index is None else int(map_index))
            by_instance.setdefault(key, []).append((when, str(event)))
    timings: list[SlotTiming] = []
    for task_id, map_index, state, start, end in instances:
        if start is None or end is None:
            timings.append(SlotTiming(str(state), math.nan, math.nan, math.nan, 0))
            continue
        key = (str(task_id), -1 if map_index is None else int(map_index))
        timings.append(slot_timing(str(state), start, end, by_instance.get(key, [])))
    return timings


# ------------------------------------------------------------------ the distributed set-up


class TriggererMemory:
    """Each triggerer's peak RSS from now on: every process of its session has its ``VmHWM``
    reset at construction; :meth:`peaks` reads them back."""

    def __init__(self, sessions: Mapping[str, int]) -> None:
        from devtools.sessions import session_processes

        self.reset = True
        self.baseline: dict[str, dict[int, int]] = {}
        for name, session in sessions.items():
            self.baseline[name] = {}
            for pid in session_processes(session):
                self.reset = reset_process_peak_rss(pid) and self.reset
                if (rss := process_rss_kib(pid)) is not None:
                    self.baseline[name][pid] = rss

    def peaks(self) -> dict[str, dict[str, Any]]:
        """Per triggerer: the peak (``VmHWM``, MiB) and growth of the process that grew most
        (a triggerer is a job process and a trigger runner: the runner holds the triggers),
        and every process's own figures."""
        found: dict[str, dict[str, Any]] = {}
        for name, processes in self.baseline.items():
            each: dict[str, dict[str, float]] = {}
            for pid, before in processes.items():
                high = process_rss_kib(pid, "VmHWM")
                if high is not None:
                    each[str(pid)] = {"peak_mib": high / 1024, "growth_mib": (high - before) / 1024}
            grew = max(each.values(), key=lambda v: v["growth_mib"], default=None)
            found[name] = {
                "peak_mib": grew["peak_mib"] if grew else math.nan,
                "growth_mib": grew["growth_mib"] if grew else math.nan,
                "processes": each,
            }
        return found


def _sessions(airflow: Any) -> dict[str, int]:
    return {
        name: session
        for name in TRIGGERERS
        if (session := airflow.components[name].session) is not None
    }


def _run_slots(airflow: Any, dag_id: str, run_id: str) -> list[SlotTiming]:
    instances = airflow.postgres.query(
        "SELECT task_id, map_index, state, start_date, end_date FROM task_instance"
        " WHERE dag_id = %s AND run_id = %s",
        (dag_id, run_id),
    )
    events = airflow.postgres.query(
        "SELECT task_id, map_index, dttm, event FROM log"
        " WHERE dag_id = %s AND run_id = %s AND event = ANY(%s)",
        (dag_id, run_id, list(RUN_EVENTS)),
    )
    return _timings(instances, events)


def _floor_wall(airflow: Any, dag_id: str, run_id: str) -> tuple[float, int]:
    """From the first ``wait`` instance's start to the last one's end; how many succeeded."""
    [(first, last, done)] = airflow.postgres.query(
        "SELECT MIN(start_date), MAX(end_date), COUNT(*) FILTER (WHERE state = 'success')"
        " FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = 'wait'",
        (dag_id, run_id),
    )
    wall = (last - first).total_seconds() if first and last else math.nan
    return wall, int(done)


def measure_case(
    airflow: Any,
    case: str,
    fake: FakeApiProcess | None,
    *,
    count: int,
    duration: float,
    output: Path,
) -> dict[str, Any]:
    """Run one case on a started distributed Airflow; its figures."""
    dag_id = DAG_IDS[case]
    if fake is not None:
        fake.set_duration(duration)
        fake.take_stats()
        conf: dict[str, Any] = {"count": count, "output_dir": str(output)}
    else:
        conf = {"count": count, "wait_s": duration}
    memory = TriggererMemory(_sessions(airflow))
    since = time.time()
    started = time.monotonic()
    run_id = airflow.trigger_dag(dag_id, conf=conf)
    state = airflow.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    result: dict[str, Any] = {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "client_wall_s": time.monotonic() - started,
        "triggerer_rss": memory.peaks(),
        "rss_reset": memory.reset,
    }
    if fake is None:
        wall, done = _floor_wall(airflow, dag_id, run_id)
        result.update({"wall_s": wall, "wall_over_t": wall / duration, "failed": count - done})
        images = count
    else:
        stats = fake.take_stats()
        tasks = {tid: t for tid, t in fake.task_times().items() if t.created_at >= since}
        result.update(image_figures(stats, tasks, output, count, duration))
        images = result["images"]
    result.update(slot_figures(_run_slots(airflow, dag_id, run_id), images))
    return result


def warm_up(airflow: Any, fake: FakeApiProcess, output: Path) -> None:
    """A throwaway batch of 2 short generations: the first task a fresh worker runs, and the
    first trigger of a kind a triggerer loads, pay one-time costs that are no case's."""
    fake.set_duration(WARM_UP_DURATION)
    run_id = airflow.trigger_dag(DAG_IDS["batch"], conf={"count": 2, "output_dir": str(output)})
    airflow.wait_for_run(DAG_IDS["batch"], run_id, timeout=600)


def run(
    workdir: Path,
    *,
    count: int = 1000,
    duration: float = 30.0,
    cases: Sequence[str] = CASES,
) -> dict[str, Any]:
    """B6 (full mode) on a fresh distributed Airflow: each case in ``cases``, in order.

    A case that fails is recorded as ``{"error": ...}`` and the next one still runs.
    """
    from devtools.distributed import DistributedAirflow

    unknown = set(cases) - set(CASES)
    if unknown:
        raise ValueError(f"unknown B6 cases {sorted(unknown)}; there are {CASES}")
    results: dict[str, dict[str, Any]] = {}
    with (
        FakeApiProcess(duration=duration, log_path=workdir / "b6-fake.log") as fake,
        FakeApiProcess(
            duration=duration,
            max_in_flight=SERVICE_LIMIT,
            log_path=workdir / "b6-limited-fake.log",
        ) as limited,
    ):
        airflow = DistributedAirflow(
            home=workdir / "b6-home",
            dags_folder=DAGS_FOLDER,
            extra_env={
                "AIRFLOW_CONN_FLUX_DEFAULT": fake.connection_json(),
                LIMITED_CONNECTION: limited.connection_json(),
            },
            worker_concurrency=WORKER_SLOTS,
            triggerer_health_check_threshold=HEALTH_CHECK_THRESHOLD,
        )
        sources = {"batch": fake, "limited": limited, "mapped": fake, "floor": None}
        with airflow:
            startup = airflow.startup_seconds
            warm_up(airflow, fake, workdir / "b6-warm-up")
            for case in cases:
                print(f"B6: case {case} ({count} x {duration:g} s)", flush=True)
                began = time.monotonic()
                try:
                    results[case] = measure_case(
                        airflow,
                        case,
                        sources[case],
                        count=count,
                        duration=duration,
                        output=workdir / f"b6-{case}-images",
                    )
                except Exception as error:  # one case's failure must not lose the others
                    results[case] = {"error": f"{type(error).__name__}: {error}"[:2000]}
                results[case]["seconds"] = round(time.monotonic() - began, 1)
    return {
        "method": "distributed",
        "parameters": {
            "images": count,
            "duration_s": duration,
            "service_limit": SERVICE_LIMIT,
            "worker_slots": WORKER_SLOTS,
            "health_check_threshold_s": HEALTH_CHECK_THRESHOLD,
        },
        "startup_s": startup,
        "cases": results,
    }


# ------------------------------------------------------------------ quick mode: dag.test()


def _dag_test_slots(dag_id: str, run_id: str) -> list[SlotTiming]:
    from airflow.models.log import Log
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        instances = session.execute(
            select(
                TaskInstance.task_id,
                TaskInstance.map_index,
                TaskInstance.state,
                TaskInstance.start_date,
                TaskInstance.end_date,
            ).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        events = session.execute(
            select(Log.task_id, Log.map_index, Log.dttm, Log.event).where(
                Log.dag_id == dag_id, Log.run_id == run_id, Log.event.in_(RUN_EVENTS)
            )
        ).all()
    return _timings(
        [(str(t), int(m), str(s), b, e) for t, m, s, b, e in instances],
        [(str(t), -1 if m is None else int(m), w, str(ev)) for t, m, w, ev in events],
    )


def run_dag_test(
    fake: FakeApiProcess, *, count: int, duration: float, output: Path
) -> dict[str, Any]:
    """Case (a) under ``dag.test()`` in this process (set up by
    :mod:`benchmarks.dag_test_child`, which also ran the throwaway run)."""
    from devtools.dags import load_dag

    dag = load_dag(DAG_IDS["batch"], DAGS_FOLDER)
    fake.set_duration(duration)
    fake.take_stats()
    memory_reset = reset_peak_rss()
    rss_before = rss_kib()
    since = time.time()
    dag_run = dag.test(run_conf={"count": count, "output_dir": str(output)})
    peak = peak_rss_kib()
    stats = fake.take_stats()
    tasks = {tid: t for tid, t in fake.task_times().items() if t.created_at >= since}
    result: dict[str, Any] = {
        "state": str(dag_run.state),
        "process_rss": {"peak_mib": peak / 1024, "growth_mib": (peak - rss_before) / 1024},
        "rss_reset": memory_reset,
    }
    result.update(image_figures(stats, tasks, output, count, duration))
    result.update(slot_figures(_dag_test_slots(dag.dag_id, dag_run.run_id), result["images"]))
    return {
        "method": "dag.test",
        "parameters": {"images": count, "duration_s": duration},
        "cases": {"batch": result},
    }
