"""B4 mapped batch: 100 mapped deferrable generations on ``airflow standalone``.

``flux_bench_batch`` (``benchmarks/dags``) maps ``FluxGenerateImageOperator`` over 100 prompts;
the fake API (a process of its own) makes every generation last T = 30 s; the LocalExecutor
runs a few task processes at a time (``parallelism``, sized for a 2-core machine) and the real
triggerer polls. Figures:

* ``wall_over_t``: the DAG run's own duration (Airflow's ``start_date`` to ``end_date``, which
  includes the prompt task) divided by T. The ideal is a little over 1: every generation
  submitted at once, all noticed together.
* ``max_deferred``: the most task instances seen in state ``deferred`` at once (REST API,
  sampled about once a second): how many generations the triggerer carried together.
* ``api_calls``: creates + polls the fake API received for the whole run, and per image.
* ``slot_median_s``: worker-slot seconds per image, by the B3 method (duration minus deferred
  time, from the audit log).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from benchmarks.fake_process import FakeApiProcess
from benchmarks.worker_slot import as_datetime, standalone_timings, summarise

if TYPE_CHECKING:
    from devtools.standalone import StandaloneAirflow

DAG_ID = "flux_bench_batch"
TARGET_WALL_OVER_T = 3.0
_SAMPLE_INTERVAL = 1.0


def _states(airflow: StandaloneAirflow, run_id: str) -> Counter[str]:
    """How many mapped generation task instances are in each state (bounded paging)."""
    states: Counter[str] = Counter()
    for page in range(20):
        tis = airflow.api(
            "GET",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
            params={"task_id": "generate", "limit": 100, "offset": 100 * page},
        )["task_instances"]
        states.update(str(ti["state"]) for ti in tis if ti["task_id"] == "generate")
        if len(tis) < 100:
            break
    return states


def run(
    airflow: StandaloneAirflow,
    fake: FakeApiProcess,
    *,
    count: int = 100,
    duration: float = 30.0,
    parallelism: int,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Trigger the batch, sample deferred task instances until the run ends; the figures."""
    fake.set_duration(duration)
    fake.take_stats()
    started = time.monotonic()
    run_id = airflow.trigger_dag(DAG_ID, conf={"count": count})
    deadline = started + timeout
    samples: list[dict[str, Any]] = []
    state = "queued"
    while time.monotonic() < deadline:
        state = str(airflow.dag_run(DAG_ID, run_id)["state"])
        counts = _states(airflow, run_id)
        samples.append({"t": round(time.monotonic() - started, 1), **counts})
        if state in ("success", "failed"):
            break
        time.sleep(_SAMPLE_INTERVAL)
    else:
        raise TimeoutError(f"{DAG_ID} still {state} after {timeout:.0f}s: {samples[-1:]}")
    client_wall = time.monotonic() - started
    stats = fake.take_stats()
    run = airflow.dag_run(DAG_ID, run_id)
    start = run.get("start_date")
    end = run.get("end_date")
    run_wall = (
        (as_datetime(end) - as_datetime(start)).total_seconds() if start and end else math.nan
    )
    slots = summarise(standalone_timings(airflow, DAG_ID, run_id))
    calls = stats["create_requests"] + stats["poll_requests"]
    return {
        "parameters": {
            "images": count,
            "duration_s": duration,
            "parallelism": parallelism,
            "sample_interval_s": _SAMPLE_INTERVAL,
        },
        "state": state,
        "run_wall_s": run_wall,
        "client_wall_s": client_wall,
        "wall_over_t": run_wall / duration,
        "max_deferred": max((s.get("deferred", 0) for s in samples), default=0),
        "max_running": max((s.get("running", 0) for s in samples), default=0),
        "api_calls": calls,
        "creates": stats["create_requests"],
        "polls": stats["poll_requests"],
        "api_calls_per_image": calls / count,
        "failures": slots["failures"],
        "slot_median_s": slots["slot_median_s"],
        "slot_max_s": slots["slot_max_s"],
        "samples": samples,
    }
