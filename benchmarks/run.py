"""Run the benchmark suite: ``python -m benchmarks.run [--quick] [--only B1,B2,B3,B4,B5,B6]``.

Prints one table and writes ``benchmarks/results/latest.json`` (date, machine, parameters and
every figure); a full run also puts the table into ``benchmarks/README.md`` (a full run of every
benchmark into its main results block; a full run of B6 alone into B6's own block).

* full (``make bench``, ~100 min): B1 at N = 100 (ours and the per-task floor three times) and
  1000 (twice) with T = 30 s plus an all-at-once start at N = 1000; B2 at 10/30/60 s; B3 and
  B4 on one ``airflow standalone``; B5 and B6 each on a distributed Airflow (PostgreSQL,
  Celery, two triggerers).
* quick (``make bench-quick``, < 2 min): B1 at N = 100 with T = 5 s; B2 with time scaled by
  0.2; B3 and B6's case (a) with 100 images of T = 5 s, both with ``dag.test()`` in one child;
  B4 and B5 skipped.

Every process started is stopped at the end, also on failure or Ctrl-C. Work files (child
logs, Airflow homes) go to a temporary folder, kept only if a benchmark failed or with
``--keep-workdir``. The machine is shared and noisy: compare ratios within one run, not
absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import batch_operator, dag_test_child, fleet, mapped_batch, polling, worker_slot
from benchmarks.fake_process import FakeApiProcess
from benchmarks.measure import machine

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "latest.json"
README = BENCH_DIR / "README.md"
README_BEGIN = "<!-- latest-results:begin -->"
README_END = "<!-- latest-results:end -->"
ALL = ("B1", "B2", "B3", "B4", "B5", "B6")
ALONE = ("B6",)
"""Benchmarks whose full run alone (``--only B6``) has a results block of its own in the README."""

B1_TARGET_FLOOR_N100 = 1.25
B1_ROUNDS_N100 = 3
B1_TARGET_FLOOR = 1.0
B1_TARGET_SHARED_FLOOR = 1.2
B1_TARGET_CONNECTIONS = 64
B1_TARGET_FDS = 200
B1_TARGET_RSS_MIB = 20.0
B1_TARGET_LAG_MAX_MS = 100.0
B1_TARGET_LAG_P99_MS = 20.0
B4_PARALLELISM = 8

Row = tuple[str, str, str, str, str]


class StopRequestedError(Exception):
    """SIGTERM/SIGINT: unwind so every ``finally`` stops what it started."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise StopRequestedError(f"signal {signum}")


def child_env(workdir: Path) -> dict[str, str]:
    """Environment of the B1/B2 children: no inherited Airflow settings, a private home."""
    home = workdir / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    return env


# ------------------------------------------------------------------ running


def run_b1(quick: bool, env: dict[str, str], workdir: Path, profile: bool) -> dict[str, Any]:
    """B1: N = 100 (quick) or 100 and 1000 with T = 30 s, plus the all-at-once start."""
    duration = 5.0 if quick else 30.0
    ramp = min(5.0, duration / 5)
    result = fleet.run(
        [100] if quick else [100, 1000],
        duration,
        ramp=ramp,
        env=env,
        workdir=workdir,
        repeats=None if quick else {100: B1_ROUNDS_N100, 1000: 2},
        repeated_variants=None if quick else ("ours", "floor"),
        profile_dir=(RESULTS.parent if profile else None),
    )
    if not quick:
        burst = fleet.run(
            [1000],
            duration,
            ramp=0.0,
            env=env,
            workdir=workdir,
            variants=("ours", "floor", "shared_floor"),
        )
        result["burst"] = burst["sizes"][0]
    return result


def run_standalone_benchmarks(
    run_b3: bool, run_b4: bool, workdir: Path
) -> dict[str, dict[str, Any]]:
    """B3 and B4 on one ``airflow standalone`` (LocalExecutor, real triggerer)."""
    from devtools.standalone import StandaloneAirflow

    results: dict[str, dict[str, Any]] = {}
    with FakeApiProcess(duration=30.0, log_path=workdir / "standalone-fake.log") as fake:
        extra_env = {
            "AIRFLOW_CONN_FLUX_DEFAULT": fake.connection_json(),
            "AIRFLOW__CORE__PARALLELISM": str(B4_PARALLELISM),
        }
        home = workdir / "standalone-home"
        with StandaloneAirflow(
            home=home, dags_folder=worker_slot.DAGS_FOLDER, extra_env=extra_env
        ) as airflow:
            if run_b3:
                results["B3"] = _guarded("B3", lambda: worker_slot.run_standalone(airflow, fake))
            if run_b4:
                results["B4"] = _guarded(
                    "B4",
                    lambda: mapped_batch.run(airflow, fake, parallelism=B4_PARALLELISM),
                )
    return results


def _guarded(name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one benchmark; a failure becomes an ``error`` entry instead of ending the suite."""
    started = time.perf_counter()
    print(f"--- {name} ...", flush=True)
    try:
        result = work()
    except StopRequestedError:
        raise
    except Exception as error:
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"[:2000]}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"--- {name} done in {result['seconds']:.0f}s", flush=True)
    return result


def run_suite(
    only: Sequence[str], quick: bool, workdir: Path, profile: bool
) -> dict[str, dict[str, Any]]:
    """Every selected benchmark, in order; each one's results or error."""
    env = child_env(workdir)
    results: dict[str, dict[str, Any]] = {}
    if "B1" in only:
        results["B1"] = _guarded("B1", lambda: run_b1(quick, env, workdir, profile))
    if "B2" in only:
        results["B2"] = _guarded("B2", lambda: polling.run(quick=quick, env=env, workdir=workdir))
    if quick:
        in_child = [name for name in dag_test_child.NAMES if name in only]
        if in_child:
            label = " and ".join(in_child)
            both = _guarded(label, lambda: dag_test_child.run(in_child, env=env, workdir=workdir))
            for name in in_child:
                results[name] = both.get(name) or {"error": both.get("error", "no result")}
        if "B4" in only:
            results["B4"] = {"skipped": "skipped in quick mode (needs ~5 min of standalone)"}
    elif "B3" in only or "B4" in only:
        try:
            results.update(run_standalone_benchmarks("B3" in only, "B4" in only, workdir))
        except StopRequestedError:
            raise
        except Exception as error:  # start-up of standalone failed
            traceback.print_exc()
            for name in ("B3", "B4"):
                if name in only and name not in results:
                    results[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    if "B5" in only:
        if quick:
            results["B5"] = {
                "skipped": "skipped in quick mode (needs ~15 min of a distributed Airflow)"
            }
        else:
            from benchmarks import distributed_batch

            b1 = results.get("B1")
            results["B5"] = _guarded("B5", lambda: distributed_batch.run(workdir, b1=b1))
    if "B6" in only and not quick:
        results["B6"] = _guarded("B6", lambda: batch_operator.run(workdir))
    return results


# ------------------------------------------------------------------ the table


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "NO")


def _target(text: str, ok: bool | None) -> str:
    return f"{text} {_verdict(ok)}".strip()


def _each(runs: dict[str, dict[str, Any]], key: str, digits: int = 2) -> str:
    """``key`` of every variant, labelled: ``ours 1.20 / floor 1.31 / ...``."""
    return " / ".join(f"{fleet.LABELS[name]} {_f(v[key], digits)}" for name, v in runs.items())


def b1_rows(b1: dict[str, Any]) -> list[Row]:
    """Rows of B1: per fleet size, CPU ratios, lag, RSS, connections, descriptors, failures."""
    rows: list[Row] = []
    params = b1["parameters"]
    sizes = [(size, False) for size in b1["sizes"]]
    if "burst" in b1:
        sizes.append((b1["burst"], True))
    for size, burst in sizes:
        runs: dict[str, dict[str, Any]] = size["variants"]
        ours = runs["ours"]
        start = "all at once" if burst else f"ramp {params['ramp_s']:g} s"
        case = f"N={size['n']}, T={params['duration_s']:g} s, {start}"
        ramp_1000 = size["n"] >= 1000 and not burst
        ratios = size["ratios"]

        def add(figure: str, value: str, target: str = "", case: str = case) -> None:
            rows.append(("B1", case, figure, value, target))

        add("CPU ms/poll", _each(runs, "cpu_per_poll_ms"))
        rounds = size.get("round_ratios") or []
        if size["n"] < 1000 and len(rounds) > 1:
            ok = all(ratio <= B1_TARGET_FLOOR_N100 for ratio in rounds)
            add(
                f"CPU/poll ours / floor, each of {len(rounds)} runs",
                " / ".join(_f(ratio) for ratio in rounds),
                _target(f"<= {B1_TARGET_FLOOR_N100} each", ok),
            )
        elif "ours_per_floor" in ratios:
            ratio = ratios["ours_per_floor"]
            limit = B1_TARGET_FLOOR if ramp_1000 else B1_TARGET_FLOOR_N100
            target = ""
            if not burst:
                target = _target(f"<= {limit:g}", ratio <= limit)
            add("CPU/poll ours / floor", _f(ratio), target)
        if "ours_per_shared_floor" in ratios:
            ratio = ratios["ours_per_shared_floor"]
            target = ""
            if ramp_1000:
                target = _target(f"<= {B1_TARGET_SHARED_FLOOR:g}", ratio <= B1_TARGET_SHARED_FLOOR)
            add("CPU/poll ours / shared floor", _f(ratio), target)
        if "ours_per_naive" in ratios:
            add("CPU/poll ours / naive", _f(ratios["ours_per_naive"]), "< 1")
        for name, figures in runs.items():
            lag = (
                f"{_f(figures['lag_max_ms'], 0)} / {_f(figures['lag_p99_ms'], 1)} / "
                f"{_f(figures['lag_max_no_full_gc_ms'], 0)}"
            )
            target = ""
            if name == "ours" and burst:
                ok = (
                    figures["lag_max_no_full_gc_ms"] <= B1_TARGET_LAG_MAX_MS
                    and figures["lag_p99_ms"] <= B1_TARGET_LAG_P99_MS
                )
                target = _target(
                    f"outside GCs <= {B1_TARGET_LAG_MAX_MS:g}, p99 <= {B1_TARGET_LAG_P99_MS:g}", ok
                )
            label = fleet.LABELS[name]
            add(f"{label}: loop lag ms, max / p99 / max outside full GCs", lag, target)
        add(
            "full GC pause ms, idle process -> longest in run",
            " / ".join(
                f"{fleet.LABELS[name]} {_f(v.get('gc_full_before_run_ms'), 0)} -> "
                f"{_f(v['gc_max_pause_ms'], 0)}"
                for name, v in runs.items()
            ),
        )
        rss_ok = ours["rss_growth_mib"] <= B1_TARGET_RSS_MIB if ramp_1000 else None
        add(
            "RSS growth MiB",
            _each(runs, "rss_growth_mib", 1),
            _target(f"ours <= {B1_TARGET_RSS_MIB:g}", rss_ok) if ramp_1000 else "",
        )
        connections_ok = None
        if ramp_1000:
            connections_ok = (
                ours["server_connections"] <= B1_TARGET_CONNECTIONS
                and ours["max_fds"] <= B1_TARGET_FDS
            )
        add(
            "TCP connections (at the fake), peak open fds",
            " / ".join(
                f"{fleet.LABELS[name]} {v['server_connections']}, {v['max_fds']}"
                for name, v in runs.items()
            ),
            _target(f"ours <= {B1_TARGET_CONNECTIONS}, <= {B1_TARGET_FDS}", connections_ok)
            if ramp_1000
            else "",
        )
        failures = ", ".join(f"{fleet.LABELS[k]} {v['failures']}" for k, v in runs.items())
        add(
            "ours: polls/task; failures",
            f"{_f(ours['polls_per_task'], 1)}; {failures}",
            _target("0 failures", all(v["failures"] == 0 for v in runs.values())),
        )
    return rows


def b2_rows(b2: dict[str, Any]) -> list[Row]:
    """Rows of B2: per policy and duration, calls per task and notice delay."""
    params = b2["parameters"]
    scale = params["time_scale"]
    max_calls = params["targets"]["calls_at_30s"]
    max_notice = params["targets"]["notice_p95_s"]
    rows: list[Row] = []
    for row in b2["rows"]:
        nominal = row["nominal_s"]
        target = ""
        if row["policy"].startswith("adaptive") and math.isclose(nominal, 30.0 * scale):
            ok = (
                row["calls_mean"] <= max_calls
                and row["notice_p95_s"] <= max_notice
                and row["failures"] == 0
            )
            target = _target(f"<= {max_calls}, p95 <= {max_notice:g} s", ok)
        value = (
            f"{_f(row['calls_mean'], 1)} ({row['calls_max']}), {_f(row['notice_p50_s'])} / "
            f"{_f(row['notice_p95_s'])} / {_f(row['notice_max_s'])}"
        )
        if row["failures"]:
            value += f", {row['failures']} failed"
        figure = "calls/task mean (max), notice p50 / p95 / max s"
        case = f"{row['policy']}, D={nominal:g} s"
        if scale != 1.0:
            case += f" (time x{scale:g})"
        rows.append(("B2", case, figure, value, target))
    return rows


def b3_rows(b3: dict[str, Any]) -> list[Row]:
    """Rows of B3: worker-slot seconds per image, deferrable vs in the worker."""
    rows: list[Row] = []
    method = "dag.test" if b3["method"].startswith("dag.test") else "standalone"
    for mode, figures in b3["modes"].items():
        target = ""
        if mode == "deferrable":
            ok = figures["slot_median_s"] <= worker_slot.TARGET_DEFERRABLE_S
            target = _target(f"<= {worker_slot.TARGET_DEFERRABLE_S:g}", ok)
        value = f"{_f(figures['slot_median_s'])} ({_f(figures['slot_max_s'])})"
        if figures["failures"]:
            value += f", {figures['failures']} failed"
        case = f"{mode}, T={b3['duration_s']:g} s, {method}"
        rows.append(
            ("B3", case, f"slot s/image median (max), n={figures['images']}", value, target)
        )
    return rows


def b4_rows(b4: dict[str, Any]) -> list[Row]:
    """Rows of B4: wall time / T, deferred concurrency, API calls, worker slots."""
    p = b4["parameters"]
    case = f"{p['images']} images, T={p['duration_s']:g} s, parallelism {p['parallelism']}"
    ok = b4["wall_over_t"] <= mapped_batch.TARGET_WALL_OVER_T and b4["state"] == "success"
    return [
        (
            "B4",
            case,
            "run wall / T (run wall s)",
            f"{_f(b4['wall_over_t'])} ({_f(b4['run_wall_s'], 0)})",
            _target(f"<= {mapped_batch.TARGET_WALL_OVER_T:g}", ok),
        ),
        (
            "B4",
            case,
            "max deferred at once (max running)",
            f"{b4['max_deferred']} ({b4['max_running']})",
            "",
        ),
        (
            "B4",
            case,
            "API calls total (per image)",
            f"{b4['api_calls']} ({_f(b4['api_calls_per_image'], 1)})",
            "",
        ),
        (
            "B4",
            case,
            "slot s/image median (max); failures",
            f"{_f(b4['slot_median_s'])} ({_f(b4['slot_max_s'])}); {b4['failures']}",
            _target("0 failures", b4["failures"] == 0),
        ),
    ]


def b5_rows(b5: dict[str, Any]) -> list[Row]:
    """Rows of B5: the distributed batch, with a triggerer SIGKILLed half way through."""
    from benchmarks import distributed_batch as b5_module

    p = b5["parameters"]
    case = f"{p['generations']} gens, T={p['duration_s']:g} s, 2 triggerers, Celery, PG"
    batch = b5["batch"]
    polls = batch["polls_per_generation"]
    baseline = b5.get("b1_polls_per_task")
    polls_ok = None
    polls_value = _f(polls, 1)
    if baseline:
        polls_ok = abs(polls / baseline - 1) <= b5_module.TARGET_POLLS_DEVIATION
        polls_value += f" (B1 ours {_f(baseline, 1)})"
    cpu = _f(batch["cpu_ms_per_poll"])
    if b5.get("b1_cpu_ms_per_poll"):
        ratio = batch["cpu_ms_per_poll"] / b5["b1_cpu_ms_per_poll"]
        cpu += f" (B1 ours {_f(b5['b1_cpu_ms_per_poll'])}: x{_f(ratio)})"
    connections = batch["connections"]
    limit = p["health_check_threshold_s"] + b5_module.TARGET_ADOPTION_MARGIN_S
    killed = f"SIGKILL of {batch['victim']} holding {batch['orphans']} triggers half way"
    return [
        (
            "B5",
            case,
            "first submit to last stored image / T (s)",
            f"{_f(batch['wall_over_t'])} ({_f(batch['wall_s'], 0)})",
            "",
        ),
        (
            "B5",
            case,
            "trigger polls per generation",
            polls_value,
            _target(f"within {b5_module.TARGET_POLLS_DEVIATION:.0%} of B1's", polls_ok),
        ),
        ("B5", case, "triggerers' CPU ms per poll", cpu, ""),
        (
            "B5",
            case,
            "connections to the API per triggerer, peak (opened)",
            " / ".join(f"{n} {c['peak']} ({c['opened']})" for n, c in sorted(connections.items())),
            _target(
                f"<= {b5_module.TARGET_CONNECTIONS}",
                all(c["peak"] <= b5_module.TARGET_CONNECTIONS for c in connections.values()),
            ),
        ),
        (
            "B5",
            killed,
            "adoption s; failed; paid twice",
            f"{_f(batch['adoption_s'], 1)}; {batch['failed']}; {batch['paid_twice']}",
            _target(
                f"<= {limit:g} s; 0; 0",
                batch["adoption_s"] <= limit and batch["failed"] == 0 and batch["paid_twice"] == 0,
            ),
        ),
    ]


def _b6_case(name: str, images: int, duration: float, method: str) -> str:
    where = ", dag.test" if method == "dag.test" else ""
    return {
        "batch": (
            f"(a) {images} images, one batch task, max_in_flight "
            f"{batch_operator.BATCH_MAX_IN_FLIGHT}"
        ),
        "limited": (
            f"(b) {images} images, one batch task, service limit "
            f"{batch_operator.SERVICE_LIMIT}, max_in_flight {batch_operator.SERVICE_LIMIT}"
        ),
        "mapped": f"(c) {images} mapped FluxGenerateImageOperator",
        "floor": f"(d) floor: {images} mapped DateTimeSensorAsync",
    }[name] + f", T={duration:g} s{where}"


def b6_case_rows(
    name: str, figures: dict[str, Any], parameters: dict[str, Any], method: str
) -> list[Row]:
    """Rows of one B6 case."""
    images = parameters["images"]
    case = _b6_case(name, images, parameters["duration_s"], method)
    if "error" in figures:
        return [("B6", case, "ERROR", figures["error"].splitlines()[0][:120], "")]
    batch = name in ("batch", "limited")
    rows: list[Row] = []

    def add(figure: str, value: str, target: str = "") -> None:
        rows.append(("B6", case, figure, value, target))

    wall = f"{_f(figures['wall_over_t'])} ({_f(figures['wall_s'], 0)})"
    if name == "floor":
        add("first task start to last task end / T (s)", wall)
    else:
        target = ""
        if name == "batch":
            limit = batch_operator.TARGET_BATCH_WALL_OVER_T
            target = _target(f"<= {limit:g}", figures["wall_over_t"] <= limit)
        elif name == "limited":
            limit = batch_operator.limited_target(images)
            target = _target(f"<= {limit:g}", figures["wall_over_t"] <= limit)
        add("first submit to last stored image / T (s)", wall, target)
        ready = " / ".join(
            _f(figures[f"ready_to_stored_{key}_s"], 1) for key in ("p50", "p95", "max")
        )
        target = ""
        if batch:
            limit = batch_operator.TARGET_READY_TO_STORED_MAX_S
            target = _target(f"max <= {limit:g}", figures["ready_to_stored_max_s"] <= limit)
        add("ready to stored s, p50 / p95 / max", ready, target)
    add(
        "worker-slot s in all (per image)",
        f"{_f(figures['slot_s'], 1)} ({_f(figures['slot_s_per_image'])})",
    )
    if name != "floor":
        add(
            "API calls per image (calls in all)",
            f"{_f(figures['api_calls_per_image'], 1)} ({figures['api_calls']})",
        )
        target = ""
        if name == "limited":
            limit = batch_operator.SERVICE_LIMIT
            target = _target(f"<= {limit}", figures["peak_in_flight"] <= limit)
        add(
            "most in flight at the fake; creates refused (429)",
            f"{figures['peak_in_flight']}; {figures['rate_limited_creates']}",
            target,
        )
        add(
            "paid twice; failed",
            f"{figures['paid_twice']}; {figures['failed']}",
            _target("0; 0", figures["paid_twice"] == 0 and figures["failed"] == 0),
        )
    else:
        add("failed", str(figures["failed"]), _target("0", figures["failed"] == 0))
    if "process_rss" in figures:
        rss = figures["process_rss"]
        add(
            "peak RSS MiB (growth) of the process running the trigger inline",
            f"{_f(rss['peak_mib'], 0)} (+{_f(rss['growth_mib'], 1)})",
        )
    else:
        add(
            "triggerers' peak RSS MiB (growth in the case)",
            " / ".join(
                f"{triggerer} {_f(v['peak_mib'], 0)} (+{_f(v['growth_mib'], 1)})"
                for triggerer, v in sorted(figures["triggerer_rss"].items())
            ),
        )
    return rows


def b6_rows(b6: dict[str, Any]) -> list[Row]:
    """Rows of B6: each case side by side."""
    rows: list[Row] = []
    for name, figures in b6["cases"].items():
        rows.extend(b6_case_rows(name, figures, b6["parameters"], b6["method"]))
    return rows


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "B1": b1_rows,
    "B2": b2_rows,
    "B3": b3_rows,
    "B4": b4_rows,
    "B5": b5_rows,
    "B6": b6_rows,
}


def table(report: dict[str, Any]) -> str:
    """The results as one Markdown table (also readable in a terminal)."""
    rows: list[Row] = []
    for name, result in report["results"].items():
        if "error" in result:
            rows.append((name, "", "ERROR", result["error"].splitlines()[0][:120], ""))
        elif "skipped" in result:
            rows.append((name, "", "", result["skipped"], ""))
        else:
            try:
                rows.extend(ROWS[name](result))
            except (KeyError, TypeError, ValueError) as error:
                rows.append((name, "", "ERROR", f"cannot tabulate: {error!r}", ""))
    header: Row = ("", "case", "figure", "value", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        for row in [header, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    m = report["machine"]
    title = (
        f"FLUX provider benchmarks, {report['mode']} mode, {report['date']} - "
        f"{m['cores']} cores, {m['ram_gib']} GiB RAM, {m['cpu']}, Python {m['python']}, "
        f"Airflow {m['airflow']} (load {m['load_avg_at_start'][0]}); "
        f"suite wall time {report['wall_s']:.0f} s"
    )
    return title + "\n\n" + "\n".join(lines)


def readme_markers(only: Sequence[str]) -> tuple[str, str] | None:
    """The README block a full run of ``only`` writes: every benchmark's, or one of
    :data:`ALONE`'s own; ``None`` for other selections."""
    if set(only) == set(ALL):
        return README_BEGIN, README_END
    if len(only) == 1 and only[0] in ALONE:
        return (
            README_BEGIN.replace("latest-results", f"latest-results:{only[0]}"),
            README_END.replace("latest-results", f"latest-results:{only[0]}"),
        )
    return None


def default_output(only: Sequence[str]) -> Path:
    """Where the results go unless ``--output`` says: a run of one of :data:`ALONE` by itself
    keeps the last full run's file."""
    if len(only) == 1 and only[0] in ALONE:
        return RESULTS.with_name(f"latest-{only[0]}.json")
    return RESULTS


def update_readme(text: str, markers: tuple[str, str] = (README_BEGIN, README_END)) -> None:
    """Replace the results block between ``markers`` of ``benchmarks/README.md`` with ``text``."""
    if not README.exists():
        return
    begin, end = markers
    content = README.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(content):
        return
    replacement = f"{begin}\n{text}\n{end}"
    README.write_text(pattern.sub(lambda _: replacement, content))


def _finite(value: Any) -> Any:
    """``value`` with every NaN/infinity replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_results(report: dict[str, Any], path: Path) -> None:
    """Write the report as strict JSON, atomically (``*.tmp`` then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(report), indent=1, default=str, allow_nan=False) + "\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; exit status 1 if a benchmark failed (not if a target was missed)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the < 2 minute smoke run")
    parser.add_argument("--only", default=",".join(ALL), help="e.g. B1,B2")
    parser.add_argument("--profile", action="store_true", help="also run B1 ours under cProfile")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON path (default: results/latest.json; results/latest-B6.json for a run "
        "of B6 alone)",
    )
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    only = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmarks: {sorted(unknown)}")

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
    }
    workdir = Path(tempfile.mkdtemp(prefix="flux-bench-"))
    failed = True
    try:
        report["results"] = run_suite(only, args.quick, workdir, args.profile)
        failed = any("error" in r for r in report["results"].values())
    except StopRequestedError:
        print(f"interrupted; work files kept in {workdir}", file=sys.stderr)
        return 130
    finally:
        if failed or args.keep_workdir:
            print(f"work files (child logs, Airflow homes): {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["wall_s"] = time.perf_counter() - started
    text = table(report)
    report["table"] = text
    output = args.output or default_output(only)
    write_results(report, output)
    print()
    print(text)
    print(f"\nwritten to {output}")
    markers = readme_markers(only)
    if not args.quick and markers is not None and args.output is None:
        update_readme(text, markers)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
