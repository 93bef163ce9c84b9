"""B2 polling: API calls per task and completion-notice delay of each polling policy.

The real ``FluxTaskTrigger.run()`` polls the fake API (a process of its own) for generations
of nominal length D = 10, 30 and 60 s, under three policies: the default adaptive schedule
(``poll_interval=None``: 2 s, growing x1.5 to a 5 s cap) and fixed 2 s and 10 s intervals.
``--tasks`` tasks per (policy, D) run concurrently in one event loop, all policies at once.

* Real generations do not last exactly D, and with identical durations every task would see
  the same phase of the poll schedule. Task ``i`` of ``n`` therefore lasts
  ``D x (0.85 + 0.30 x (i + 0.5) / n)``: D ± 15 %, spread evenly, so completions fall at every
  phase of the schedule.
* ``calls``: polls the trigger made (its event's ``polls``), checked against the fake's count.
  The operator adds one create and one poll before it defers (not counted here).
* ``notice``: seconds from the moment the task ends (its creation, as the create answer
  arrives, plus its duration: the wire's ``complete_at`` has whole seconds only) to the moment
  the trigger yields its event.

Quick mode scales time by 0.2 (D = 2, 6, 12 s; fixed intervals 0.4 s and 2 s; the adaptive
schedule 0.4 s growing to 1 s); the targets are scaled the same way and the figures are
reported as measured.

Run as ``python -m benchmarks.polling --out b2.json [--scale 0.2]`` (it starts its own fake).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.fake_process import CREATE_PATH, FakeApiProcess, create_tasks
from benchmarks.measure import die_with_parent, percentile

CONN_ID = "flux_bench"
CONN_ENV = "AIRFLOW_CONN_FLUX_BENCH"
FULL_DURATIONS = (10.0, 30.0, 60.0)
SPREAD = 0.30
TARGET_CALLS_30S = 10
TARGET_NOTICE_P95_S = 5.0


@dataclass(frozen=True)
class Policy:
    """A polling policy: ``poll_interval`` as the operator takes it (``None``: adaptive)."""

    name: str
    poll_interval: float | None


def policies(scale: float) -> list[Policy]:
    """The compared policies, their intervals multiplied by ``scale``."""
    return [
        Policy("adaptive (default)", None),
        Policy(f"fixed {2 * scale:g} s", 2.0 * scale),
        Policy(f"fixed {10 * scale:g} s", 10.0 * scale),
    ]


def task_durations(nominal: float, count: int) -> list[float]:
    """``count`` durations spread evenly over ``nominal`` ± 15 %."""
    return [nominal * (1 - SPREAD / 2 + SPREAD * (i + 0.5) / count) for i in range(count)]


def _scale_adaptive_default(scale: float) -> str:
    """Make the trigger's adaptive default ``scale`` times faster (quick mode only)."""
    from flux_provider.api.polling import PollSchedule
    from flux_provider.triggers import task as triggers

    default = PollSchedule()
    scaled = PollSchedule(default.initial * scale, default.factor, default.maximum * scale)

    class ScaledSchedule(PollSchedule):
        @classmethod
        def from_interval(cls, poll_interval: float | None) -> PollSchedule:
            return scaled if poll_interval is None else PollSchedule.fixed(poll_interval)

    # The trigger builds its schedule with `PollSchedule.from_interval`, looked up at run time.
    setattr(triggers, "PollSchedule", ScaledSchedule)  # noqa: B010
    return f"{scaled.initial:g} s x{scaled.factor:g} up to {scaled.maximum:g} s"


async def _watch(
    policy: Policy, nominal: float, actual: float, task_id: str, created: float
) -> dict[str, Any]:
    from flux_provider.triggers import FluxTaskTrigger

    trigger = FluxTaskTrigger(
        task_id,
        CONN_ID,
        deadline=time.time() + 3 * nominal + 120,
        poll_interval=policy.poll_interval,
    )
    payload: dict[str, Any] = {}
    noticed = math.nan
    async for event in trigger.run():
        payload, noticed = event.payload, time.time()
    # The wire's complete_at is whole seconds: the fake ends a task `actual` seconds after
    # creating it, and `created` is when its create answer arrived (a few ms late at most).
    completed = created + actual
    return {
        "policy": policy.name,
        "nominal_s": nominal,
        "duration_s": actual,
        "status": payload.get("status"),
        "calls": int(payload.get("polls") or 0),
        "notice_s": noticed - completed if payload.get("task") else math.nan,
    }


async def _run_all(
    fake: FakeApiProcess, durations: Sequence[float], count: int, scale: float
) -> list[dict[str, Any]]:
    import httpx

    from flux_provider.hooks import FluxHook

    # Warm up once (connection lookup, lazy imports), as a running triggerer has.
    (warm,) = create_tasks(fake.base_url, fake.api_key, 1, prefix="warm-up")
    async with FluxHook(flux_conn_id=CONN_ID).async_client() as client:
        await client.get_task(warm, retry=False)
    fake.take_stats()

    jobs: list[asyncio.Task[dict[str, Any]]] = []
    headers = {"x-api-key": fake.api_key}
    async with httpx.AsyncClient(base_url=fake.base_url, headers=headers) as creator:
        for index in range(count):
            for nominal in durations:
                actual = task_durations(nominal, count)[index]
                for policy in policies(scale):
                    fake.set_duration(actual)
                    body = {"model": "flux-2-max", "input": {"prompt": f"b2 {index}"}}
                    response = await creator.post(CREATE_PATH, json=body)
                    created = time.time()
                    task_id = str(response.json()["data"]["task_id"])
                    jobs.append(
                        asyncio.create_task(_watch(policy, nominal, actual, task_id, created))
                    )
    return list(await asyncio.gather(*jobs))


def summarise(
    records: Sequence[dict[str, Any]], durations: Sequence[float], scale: float
) -> list[dict[str, Any]]:
    """One row per (policy, nominal duration): calls per task and notice delay percentiles."""
    rows: list[dict[str, Any]] = []
    for policy in policies(scale):
        for nominal in durations:
            group = [r for r in records if r["policy"] == policy.name and r["nominal_s"] == nominal]
            ok = [r for r in group if r["status"] == "success"]
            notices = [r["notice_s"] for r in ok]
            calls = [r["calls"] for r in ok]
            rows.append(
                {
                    "policy": policy.name,
                    "nominal_s": nominal,
                    "tasks": len(group),
                    "failures": len(group) - len(ok),
                    "calls_mean": sum(calls) / len(calls) if calls else math.nan,
                    "calls_max": max(calls, default=0),
                    "notice_p50_s": percentile(notices, 50),
                    "notice_p95_s": percentile(notices, 95),
                    "notice_max_s": max(notices, default=math.nan),
                }
            )
    return rows


def run_child(count: int, scale: float, workdir: Path) -> dict[str, Any]:
    """Measure every policy in this process against a fake of its own; the results."""
    durations = [d * scale for d in FULL_DURATIONS]
    with FakeApiProcess(duration=1.0, log_path=workdir / "b2-fake.log") as fake:
        os.environ[CONN_ENV] = fake.connection_json()
        adaptive = "2 s x1.5 up to 5 s"
        if scale != 1.0:
            adaptive = _scale_adaptive_default(scale)
        started = time.perf_counter()
        records = asyncio.run(_run_all(fake, durations, count, scale))
        wall = time.perf_counter() - started
        server_polls = fake.take_stats()["poll_requests"]
    return {
        "parameters": {
            "durations_s": durations,
            "tasks_per_cell": count,
            "time_scale": scale,
            "duration_spread": f"±{SPREAD / 2:.0%} (evenly spread)",
            "adaptive_schedule": adaptive,
            "targets": {
                "calls_at_30s": TARGET_CALLS_30S,
                "notice_p95_s": TARGET_NOTICE_P95_S * scale,
            },
        },
        "rows": summarise(records, durations, scale),
        "calls_counted_by_triggers": sum(r["calls"] for r in records),
        "calls_counted_by_fake": server_polls,
        "wall_s": wall,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: run B2 and write the results as JSON to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.polling")
    parser.add_argument("--tasks", type=int, default=20, help="tasks per (policy, duration)")
    parser.add_argument("--scale", type=float, default=1.0, help="time scale (quick: 0.2)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run_child(args.tasks, args.scale, args.out.parent)
    args.out.write_text(json.dumps(result))
    return 0


def run(*, quick: bool, env: dict[str, str], workdir: Path, tasks: int = 20) -> dict[str, Any]:
    """B2 in a child process (bounded by a timeout); its results."""
    scale = 0.2 if quick else 1.0
    out = workdir / "b2.json"
    log = workdir / "b2.log"
    with log.open("w") as log_file:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.polling",
                *("--tasks", str(tasks), "--scale", str(scale), "--out", str(out)),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=600,
            preexec_fn=die_with_parent,
            check=False,
        )
    if completed.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"B2 exited {completed.returncode}:\n" + "\n".join(tail))
    return dict(json.loads(out.read_text()))


if __name__ == "__main__":
    sys.exit(main())
