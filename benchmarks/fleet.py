"""B1 fleet: N concurrent ``FluxTaskTrigger.run()`` in one event loop, against three baselines.

Each variant runs in a child process of its own (``python -m benchmarks.fleet --variant ...``)
against one shared fake-API process, so its CPU time is its own:

* ``ours``: the real ``FluxTaskTrigger.run()`` (connection from ``AIRFLOW_CONN_FLUX_BENCH``,
  every trigger leasing the connection's one shared ``AsyncFluxClient``, adaptive default
  schedule).
* ``floor`` (the per-task floor): per task one bare ``httpx.AsyncClient`` whose connection stays
  open between polls (``keepalive_expiry`` above the poll interval), the same GETs on the same
  :class:`~flux_provider.api.polling.PollSchedule`, ``json.loads`` of each answer and a look at
  ``data.status``; no validation, no logging, no bookkeeping.
* ``shared_floor``: the same loop, but every task uses one bare ``httpx.AsyncClient`` built at
  set-up, its pool bounded like ours (:data:`~flux_provider.api.config.MAX_CONNECTIONS`): the least
  work that does the job, and the lower bound.
* ``naive``: the shape many providers' triggers have: a new HTTP client (and so a new TCP
  connection) for every poll, ``response.json()``, same schedule. Its TLS context is shared
  (as aiohttp caches its default one); with httpx defaults each client would also load the CA
  bundle (~20 ms CPU), which the figures leave out.

Every variant waits a random part of the first interval before its first poll, as the trigger
does (the operator has just polled before deferring).

Figures, per variant (see :func:`summarise`):

* ``cpu_per_poll_ms``: CPU seconds of the trigger process (all threads) from the first trigger
  start to the last event, divided by the polls made. Setup (imports, creating the tasks, one
  warm-up poll, which a running triggerer has long done) is excluded, and so is the lag probe's
  own CPU, calibrated for 1 s before the run.
* ``rss_growth_mib``: peak RSS (``VmHWM``, reset just before the run) minus RSS after setup.
* ``lag_max_ms`` / ``lag_p99_ms``: how late a 10 ms sleep in the same loop woke up;
  ``lag_max_no_full_gc_ms`` leaves out the wake-ups that overlapped a full (generation 2)
  garbage collection, whose pause grows with every live object in the process (Airflow's
  own ~160k included) rather than with what the triggers do; ``gc_max_pause_ms`` is the
  longest collection.
* ``server_connections``: distinct client ports the fake saw during the run (set-up excluded:
  the parent resets the fake's counters when the child reports ready), so the TCP connections
  the variant opened; ``max_fds``: the most file descriptors the process held open (sampled
  about every 0.2 s).
* ``failures``: triggers that did not end with a ``success`` event.

Trigger starts are spread evenly over ``--ramp`` seconds, as a triggerer picks up deferred
tasks over time; all variants get the same ramp and schedule. With several rounds,
:func:`combine` keeps each variant's lowest CPU/poll and its worst lag, RSS and counts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.fake_process import INFO_PATH, FakeApiProcess, create_tasks
from benchmarks.measure import (
    GcPauses,
    LoopLagProbe,
    cpu_seconds,
    die_with_parent,
    open_fds,
    peak_rss_kib,
    reset_peak_rss,
    rss_kib,
)

VARIANTS = ("ours", "floor", "shared_floor", "naive")
LABELS = {"ours": "ours", "floor": "floor", "shared_floor": "shared floor", "naive": "naive"}
CONN_ID = "flux_bench"
CONN_ENV = "AIRFLOW_CONN_FLUX_BENCH"
TERMINAL = frozenset({"success", "failed"})
_CALIBRATION_SECONDS = 1.0
_READY_TIMEOUT = 300.0


@dataclass
class PollOutcome:
    """How one task's wait ended in a child: ``success``/``fail``/``timeout``/``error``."""

    status: str
    polls: int


PollOne = Callable[[str], Awaitable[PollOutcome]]


# ------------------------------------------------------------------ the variants


async def _setup_ours(base_url: str, api_key: str, warm_task: str, deadline: float) -> PollOne:
    """Import the trigger, warm the hook up once (as a running triggerer has), return a waiter."""
    from flux_provider.hooks import FluxHook
    from flux_provider.triggers import FluxTaskTrigger

    async with FluxHook(flux_conn_id=CONN_ID).async_client() as client:
        await client.get_task(warm_task, retry=False)

    async def wait(task_id: str) -> PollOutcome:
        trigger = FluxTaskTrigger(task_id, CONN_ID, deadline=deadline)
        payload: dict[str, Any] = {}
        async for event in trigger.run():
            payload = event.payload
        return PollOutcome(str(payload.get("status")), int(payload.get("polls") or 0))

    return wait


def _plain_options(base_url: str, api_key: str) -> dict[str, Any]:
    import httpx

    return {
        "base_url": base_url,
        "headers": {"x-api-key": api_key},
        "timeout": httpx.Timeout(30.0),
        # One TLS context for the process: without it each client loads the CA bundle.
        "verify": httpx.create_ssl_context(),
    }


def _floor_options(base_url: str, api_key: str) -> dict[str, Any]:
    import httpx

    # Idle connections live past the longest poll interval: no reconnect per poll.
    return {**_plain_options(base_url, api_key), "limits": httpx.Limits(keepalive_expiry=60.0)}


def _first_delay(schedule: Any) -> float:
    """The trigger's spread of the first poll: a random part of the first interval."""
    return random.uniform(0.0, schedule.interval(1))


async def _poll_loop(client: Any, task_id: str, deadline: float) -> PollOutcome:
    """GET, ``json.loads``, look at ``data.status``, sleep by the schedule: the least work."""
    from flux_provider.api.polling import PollSchedule

    schedule = PollSchedule()
    polls = 0
    while True:
        response = await client.get(INFO_PATH, params={"task_id": task_id})
        polls += 1
        state = json.loads(response.content)["data"]["status"]
        if state in TERMINAL:
            return PollOutcome("success" if state == "success" else "failed", polls)
        if time.time() > deadline:
            return PollOutcome("timeout", polls)
        await asyncio.sleep(schedule.interval(polls))


async def _setup_floor(base_url: str, api_key: str, warm_task: str, deadline: float) -> PollOne:
    """Per task one bare ``httpx.AsyncClient``: GET, ``json.loads``, read ``status``, sleep."""
    import httpx

    from flux_provider.api.polling import PollSchedule

    options = _floor_options(base_url, api_key)
    schedule = PollSchedule()
    async with httpx.AsyncClient(**options) as client:
        (await client.get(INFO_PATH, params={"task_id": warm_task})).raise_for_status()

    async def wait(task_id: str) -> PollOutcome:
        await asyncio.sleep(_first_delay(schedule))
        async with httpx.AsyncClient(**options) as client:
            return await _poll_loop(client, task_id, deadline)

    return wait


async def _setup_shared_floor(
    base_url: str, api_key: str, warm_task: str, deadline: float
) -> PollOne:
    """One bare ``httpx.AsyncClient`` for every task (pool bounded as ours), the same loop."""
    import httpx

    from flux_provider.api.config import KEEPALIVE_EXPIRY, MAX_CONNECTIONS
    from flux_provider.api.polling import PollSchedule

    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS,
        max_keepalive_connections=MAX_CONNECTIONS,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    # Lives as long as the child: closing it is not part of the measured work.
    client = httpx.AsyncClient(**_plain_options(base_url, api_key), limits=limits)
    (await client.get(INFO_PATH, params={"task_id": warm_task})).raise_for_status()
    schedule = PollSchedule()

    async def wait(task_id: str) -> PollOutcome:
        await asyncio.sleep(_first_delay(schedule))
        return await _poll_loop(client, task_id, deadline)

    return wait


async def _setup_naive(base_url: str, api_key: str, warm_task: str, deadline: float) -> PollOne:
    """A new ``httpx.AsyncClient`` (new connection) for every poll, ``response.json()``."""
    import httpx

    from flux_provider.api.polling import PollSchedule

    options = _plain_options(base_url, api_key)
    schedule = PollSchedule()
    async with httpx.AsyncClient(**options) as client:
        (await client.get(INFO_PATH, params={"task_id": warm_task})).raise_for_status()

    async def wait(task_id: str) -> PollOutcome:
        polls = 0
        await asyncio.sleep(_first_delay(schedule))
        while True:
            async with httpx.AsyncClient(**options) as client:
                response = await client.get(INFO_PATH, params={"task_id": task_id})
            polls += 1
            state = response.json()["data"]["status"]
            if state in TERMINAL:
                return PollOutcome("success" if state == "success" else "failed", polls)
            if time.time() > deadline:
                return PollOutcome("timeout", polls)
            await asyncio.sleep(schedule.interval(polls))

    return wait


SETUPS = {
    "ours": _setup_ours,
    "floor": _setup_floor,
    "shared_floor": _setup_shared_floor,
    "naive": _setup_naive,
}


# ------------------------------------------------------------------ child process


async def _fleet(wait: PollOne, task_ids: Sequence[str], ramp: float) -> list[PollOutcome]:
    count = len(task_ids)

    async def one(index: int, task_id: str) -> PollOutcome:
        await asyncio.sleep(ramp * index / count)
        try:
            return await wait(task_id)
        except Exception as error:  # a failure to report, not to crash the benchmark on
            return PollOutcome(f"error: {type(error).__name__}: {error}"[:200], 0)

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(task_ids))))


async def _with_probe(probe: LoopLagProbe, work: Awaitable[Any]) -> Any:
    probe_task = asyncio.create_task(probe.run())
    try:
        return await work
    finally:
        probe.stop()
        await probe_task


def run_child(
    variant: str,
    n: int,
    duration: float,
    base_url: str,
    api_key: str,
    ramp: float,
    profile: Path | None = None,
    ready_file: Path | None = None,
) -> dict[str, Any]:
    """Run one variant's fleet in this process; its raw measurements.

    With ``ready_file``, set-up done, the child creates that file and waits for a line on its
    stdin before it starts the fleet (the parent resets the fake's counters in between).
    """
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        # Imports and one warm-up poll first: the fleet's tasks must not age meanwhile.
        (warm_task,) = create_tasks(base_url, api_key, 1, prefix="warm-up")
        deadline = time.time() + 3 * duration + 120  # ample: a timeout is a failure
        wait = loop.run_until_complete(SETUPS[variant](base_url, api_key, warm_task, deadline))
        # The probe's own CPU, to subtract from the run.
        calibration = LoopLagProbe()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        loop.run_until_complete(_with_probe(calibration, asyncio.sleep(_CALIBRATION_SECONDS)))
        probe_cpu_per_s = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
        # Each task lasts `duration` from its creation, just before the fleet starts.
        task_ids = create_tasks(base_url, api_key, n, prefix=variant)
        setup_seconds = time.perf_counter() - started
        if ready_file is not None:
            ready_file.write_text("ready\n")
            sys.stdin.readline()

        gc_started = time.perf_counter()
        gc.collect()
        gc_baseline = time.perf_counter() - gc_started
        rss_before = rss_kib()
        fds_before = open_fds()
        peak_reset = reset_peak_rss()
        probe = LoopLagProbe()
        profiler = None
        if profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        with GcPauses() as gc_pauses:
            outcomes: list[PollOutcome] = loop.run_until_complete(
                _with_probe(probe, _fleet(wait, task_ids, ramp))
            )
        cpu_used, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        probe.sample()
        if profiler is not None:
            profiler.disable()
            assert profile is not None
            profiler.dump_stats(str(profile))
        peak = peak_rss_kib() if peak_reset else max(probe.max_rss_kib, rss_kib())
    finally:
        loop.close()
    failures = [o.status for o in outcomes if o.status != "success"]
    return {
        "variant": variant,
        "n": n,
        "duration_s": duration,
        "ramp_s": ramp,
        "polls": sum(o.polls for o in outcomes),
        "cpu_s": cpu_used,
        "probe_cpu_s": probe_cpu_per_s * wall,
        "wall_s": wall,
        "setup_s": setup_seconds,
        "rss_before_mib": rss_before / 1024,
        "rss_growth_mib": (peak - rss_before) / 1024,
        "peak_rss_reset": peak_reset,
        "fds_before": fds_before,
        "max_fds": probe.max_fds,
        **probe.summary(gc_pauses.full),
        **gc_pauses.summary(),
        "gc_full_before_run_ms": 1000 * gc_baseline,
        "failures": len(failures),
        "failure_examples": sorted(set(failures))[:3],
        "profiled": profile is not None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: run one variant, write its measurements as JSON to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--ramp", type=float, default=2.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats here")
    parser.add_argument(
        "--ready-file", type=Path, default=None, help="create it after set-up, then wait for stdin"
    )
    args = parser.parse_args(argv)
    result = run_child(
        args.variant,
        args.n,
        args.duration,
        args.base_url,
        args.api_key,
        args.ramp,
        args.profile,
        args.ready_file,
    )
    args.out.write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------ parent side


def spawn_variant(
    fake: FakeApiProcess,
    variant: str,
    n: int,
    duration: float,
    ramp: float,
    workdir: Path,
    env: dict[str, str],
    profile: Path | None = None,
) -> dict[str, Any]:
    """Run one variant in a child process (bounded by a timeout); its measurements."""
    out = workdir / f"b1-{variant}-{n}{'-profile' if profile else ''}.json"
    log = workdir / f"b1-{variant}-{n}.log"
    command = [
        sys.executable,
        "-m",
        "benchmarks.fleet",
        *("--variant", variant, "--n", str(n), "--duration", str(duration)),
        *("--base-url", fake.base_url, "--api-key", fake.api_key, "--ramp", str(ramp)),
        *("--out", str(out)),
        *(("--profile", str(profile)) if profile else ()),
    ]
    ready = workdir / f"b1-{variant}-{n}.ready"
    ready.unlink(missing_ok=True)
    command += ["--ready-file", str(ready)]
    child_env = {**env, CONN_ENV: fake.connection_json()}
    timeout = 6 * duration + 300
    with log.open("w") as log_file:
        child = subprocess.Popen(
            command,
            env=child_env,
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=die_with_parent,
        )
        server_cpu0 = fake.cpu_seconds()
        try:
            _wait_ready(child, ready)
            if child.poll() is None:
                # Counted from here: the fleet's own requests and connections, not set-up's.
                fake.take_stats()
                server_cpu0 = fake.cpu_seconds()
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.close()
            returncode = child.wait(timeout=timeout)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"B1 {variant} N={n} exited {returncode}:\n" + "\n".join(tail))
    result: dict[str, Any] = json.loads(out.read_text())
    stats = fake.take_stats()
    result["server_poll_requests"] = stats["poll_requests"]
    result["server_connections"] = stats["connections"]
    result["server_cpu_s"] = fake.cpu_seconds() - server_cpu0
    return result


def _wait_ready(child: subprocess.Popen[str], ready: Path) -> None:
    """Wait until the child has created ``ready`` (bounded; it must not exit first)."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while not ready.exists():
        if child.poll() is not None:
            return  # its exit status and log tell what went wrong
        if time.monotonic() > deadline:
            raise TimeoutError(f"the B1 child did not finish set-up in {_READY_TIMEOUT:g}s")
        time.sleep(0.05)


def profile_summary(path: Path, limit: int = 25) -> str:
    """Text summary of a cProfile run: hottest functions, then the provider's own code.

    cProfile adds a fixed cost per Python call, so call-heavy code (httpx, anyio) looks more
    expensive than it is; compare functions with each other, not with unprofiled CPU figures.
    """
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs()
    out.write(f"cProfile of B1 'ours' ({path.name}); top {limit} by own time:\n")
    stats.sort_stats("tottime").print_stats(limit)
    out.write("\nflux_provider and Airflow functions by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(
        r"triggers|client|lanes|hooks|models|polling|wire|sdk", limit
    )
    return out.getvalue()


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Derived figures of one variant run (CPU/poll with the probe's CPU subtracted)."""
    polls = max(int(raw["polls"]), 1)
    net_cpu = max(raw["cpu_s"] - raw["probe_cpu_s"], 0.0)
    return {
        **raw,
        "cpu_per_poll_ms": 1000 * net_cpu / polls,
        "cpu_per_poll_raw_ms": 1000 * raw["cpu_s"] / polls,
        "polls_per_task": raw["polls"] / raw["n"],
        "server_cpu_per_poll_ms": 1000 * raw["server_cpu_s"] / max(raw["server_poll_requests"], 1),
    }


def combine(reps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One variant's figures over repeated runs: the best CPU/poll, the worst of the rest.

    Noise on a shared machine only ever adds CPU time, so the lowest CPU/poll is the best
    estimate; lag, RSS growth, descriptors, connections and failures are reported at their
    worst.
    """
    best = min(reps, key=lambda r: float(r["cpu_per_poll_ms"]))
    combined = dict(best)
    for key in ("lag_max_ms", "lag_p99_ms", "lag_max_no_full_gc_ms", "gc_max_pause_ms"):
        combined[key] = max(r[key] for r in reps)
    for key in ("rss_growth_mib", "max_fds", "server_connections"):
        combined[key] = max(r[key] for r in reps)
    combined["failures"] = sum(r["failures"] for r in reps)
    combined["repeats"] = len(reps)
    combined["cpu_per_poll_ms_all"] = [r["cpu_per_poll_ms"] for r in reps]
    return combined


def run(
    ns: Sequence[int],
    duration: float,
    *,
    ramp: float = 2.0,
    env: dict[str, str],
    workdir: Path,
    variants: Sequence[str] = VARIANTS,
    repeats: Mapping[int, int] | None = None,
    repeated_variants: Sequence[str] | None = None,
    profile_dir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """B1 for each fleet size in ``ns``: every variant, then the ratios of ours to the others.

    ``repeats[n]`` rounds (default 1) run the variants interleaved, so drift in the machine's
    load hits them alike; :func:`combine` merges the rounds. Rounds after the first run only
    ``repeated_variants`` (default: all); ``round_ratios`` holds ours / floor of each round.
    """
    sizes: list[dict[str, Any]] = []
    with FakeApiProcess(duration=duration, log_path=workdir / "b1-fake.log") as fake:
        for n in ns:
            reps: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
            rounds = (repeats or {}).get(n, 1)
            round_ratios: list[float] = []
            for round_ in range(rounds):
                this_round: dict[str, dict[str, Any]] = {}
                for variant in variants:
                    if round_ > 0 and repeated_variants and variant not in repeated_variants:
                        continue
                    progress(f"B1: {variant} N={n} T={duration:g}s ({round_ + 1}/{rounds})")
                    this_round[variant] = summarise(
                        spawn_variant(fake, variant, n, duration, ramp, workdir, env)
                    )
                    reps[variant].append(this_round[variant])
                if "ours" in this_round and "floor" in this_round:
                    round_ratios.append(
                        this_round["ours"]["cpu_per_poll_ms"]
                        / max(this_round["floor"]["cpu_per_poll_ms"], 1e-9)
                    )
            runs = {variant: combine(results) for variant, results in reps.items()}
            ours = runs.get("ours", {}).get("cpu_per_poll_ms")
            ratios = {
                f"ours_per_{name}": ours / figures["cpu_per_poll_ms"]
                for name, figures in runs.items()
                if name != "ours" and ours is not None and figures["cpu_per_poll_ms"] > 0
            }
            sizes.append({"n": n, "variants": runs, "ratios": ratios, "round_ratios": round_ratios})
        profile = None
        if profile_dir is not None and "ours" in variants:
            n = max(ns)
            path = workdir / f"b1-ours-{n}.pstats"
            progress(f"B1: ours N={n} under cProfile")
            profile = summarise(
                spawn_variant(fake, "ours", n, duration, ramp, workdir, env, profile=path)
            )
            text = profile_summary(path)
            summary = profile_dir / "b1-profile.txt"
            summary.write_text(text)
            profile["summary"] = str(summary)
    return {
        "parameters": {
            "ns": list(ns),
            "duration_s": duration,
            "ramp_s": ramp,
            "repeats": {str(n): (repeats or {}).get(n, 1) for n in ns},
        },
        "sizes": sizes,
        "profile_run": profile,
    }


if __name__ == "__main__":
    sys.exit(main())
