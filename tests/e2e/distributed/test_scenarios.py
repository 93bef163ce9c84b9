"""The provider on the Airflow users deploy: PostgreSQL, Celery workers, two triggerers, faults.

One distributed Airflow (:class:`~devtools.distributed.DistributedAirflow`) serves
the module; the connection is stored in its database through the REST API, as a user adds one.
The scenarios run in order and each leaves every component running:

- D1: a mapped batch through Celery, spread over both triggerers, each within 64 connections;
- D2: a triggerer SIGKILLed while its triggers wait; the other adopts them;
- D3: the Celery worker SIGKILLed between submit and defer, and during a wait on the worker;
- D4: PostgreSQL restarted while generations wait, deferred and on the worker;
- D5: the API key is nowhere: not in a ``pg_dump``, in Redis, or in any process's log.

Every count comes from the fake API: ``tasks_created`` is what a real account would be charged
for. ``FLUX_D1_COUNT`` sizes D1's batch (default 200).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.connections import ConnectionCensus
from devtools.distributed import DistributedAirflow
from devtools.sampling import Sampler
from flux_provider.testing import FakeFluxServer, Fault
from tests.conftest import API_KEY
from tests.e2e.distributed.conftest import FAKE_DURATION, HEALTH_CHECK_THRESHOLD, report
from tests.e2e.distributed.support import (
    TRIGGERERS,
    TriggerOwnership,
    count_in,
    flux_task_ids,
    generate_states,
    polls_of,
    start_batch,
    triggerer_sessions,
)
from tests.support.security import KeySearch

pytestmark = pytest.mark.timeout(1500)

D1_COUNT = int(os.environ.get("FLUX_D1_COUNT", "200"))
D1_DURATION = 20.0
MAX_CONNECTIONS = 64
DEFERRED = "flux_batch_deferred"
ON_WORKER = "flux_batch_worker"


def _wait(
    cluster: DistributedAirflow, probe: Callable[[], Any], what: str, timeout: float = 600
) -> Any:
    """A bounded wait that also ends as soon as a component of the cluster dies."""
    return cluster.wait_until(probe, timeout, what)


def _all_succeeded(cluster: DistributedAirflow, dag_id: str, run_id: str, count: int) -> list[int]:
    """Wait for the run to succeed; each ``generate`` instance's try number."""
    state = cluster.wait_for_run(dag_id, run_id, timeout=1200)
    assert state == "success", cluster.tail()
    states = generate_states(cluster, dag_id, run_id)
    assert [seen for seen, _ in states] == ["success"] * count
    return [tries for _, tries in states]


def _created(fake_flux: FakeFluxServer) -> int:
    return fake_flux.stats.tasks_created


def _waiting(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, dag_id: str, run_id: str, count: int
) -> dict[int, str]:
    """Wait until every ``generate`` instance of the run deferred and its trigger polled."""
    _wait(cluster, lambda: count_in(cluster, dag_id, run_id, "deferred") == count, "all deferred")
    ids = flux_task_ids(cluster, dag_id, run_id)
    _wait(
        cluster,
        lambda: all(polls_of(fake_flux, flux_task_id) >= 2 for flux_task_id in ids.values()),
        "every trigger polled",
    )
    return ids


def test_d1_a_mapped_batch_spreads_over_both_triggerers_within_64_connections(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    before = _created(fake_flux)
    fake_flux.duration = D1_DURATION
    ownership = TriggerOwnership(cluster)
    census = ConnectionCensus(fake_flux.port, lambda: triggerer_sessions(cluster))
    started = time.monotonic()
    try:
        with ownership.sampler(), census:
            run_id = start_batch(cluster, DEFERRED, D1_COUNT, output)
            tries = _all_succeeded(cluster, DEFERRED, run_id, D1_COUNT)
    finally:
        fake_flux.duration = FAKE_DURATION
    wall = time.monotonic() - started

    assert _created(fake_flux) - before == D1_COUNT
    assert len(list(output.glob("*.png"))) == D1_COUNT
    jobs = {cluster.job_id(name): name for name in TRIGGERERS}
    assert ownership.holders() == set(jobs), (ownership.peaks, jobs)
    for name in TRIGGERERS:
        count = census.counts[name]
        assert count.peak <= MAX_CONNECTIONS, (name, count.peak)
        assert count.opened <= MAX_CONNECTIONS, (name, count.opened)
    held = {jobs[job]: peak for job, peak in ownership.peaks.items()}
    connections = {name: (c.peak, c.opened) for name, c in census.counts.items()}
    report(
        f"D1: {D1_COUNT} generations of {D1_DURATION:g} s in {wall:.0f} s; retries "
        f"{sum(t - 1 for t in tries)}; most trigger rows held at once {held}, "
        f"{ownership.moved()} moved between triggerers; connections to the fake (peak, opened) "
        f"{connections}"
    )


def test_d2_a_killed_triggerers_triggers_are_adopted_and_all_succeed(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    count = 20
    before = _created(fake_flux)
    run_id = start_batch(cluster, DEFERRED, count, output)
    ids = _waiting(cluster, fake_flux, DEFERRED, run_id, count)
    rows = cluster.trigger_rows().values()
    held = {
        name: [row.id for row in rows if row.triggerer_id == cluster.job_id(name)]
        for name in TRIGGERERS
    }
    victim = max(TRIGGERERS, key=lambda name: len(held[name]))
    survivor = next(name for name in TRIGGERERS if name != victim)
    survivor_job = cluster.job_id(survivor)
    orphans = held[victim]
    assert orphans

    killed_at = time.monotonic()
    cluster.kill(victim)
    try:

        def adopted() -> bool:
            current = cluster.trigger_rows()
            return all(current[tid].triggerer_id == survivor_job for tid in orphans)

        _wait(cluster, adopted, "the survivor to adopt the orphaned triggers", timeout=300)
        adoption = time.monotonic() - killed_at
        # The adopted triggers poll again from the survivor, before any task is ended.
        since = time.monotonic()
        _wait(
            cluster,
            lambda: all(polls_of(fake_flux, fid, since) >= 1 for fid in ids.values()),
            "every trigger polled after the adoption",
        )
        for flux_task_id in ids.values():
            fake_flux.complete(flux_task_id)
        tries = _all_succeeded(cluster, DEFERRED, run_id, count)
    finally:
        cluster.start_component(victim)

    assert _created(fake_flux) - before == count
    assert tries == [1] * count  # no event was lost: no try had to be repeated
    report(
        f"D2: killed {victim} holding {len(orphans)} of {count} triggers; {survivor} held them "
        f"all {adoption:.1f} s after the SIGKILL (health-check threshold "
        f"{HEALTH_CHECK_THRESHOLD:g} s); {count} succeeded in their first try"
    )


def test_d3_a_killed_worker_between_submit_and_defer_is_retried_without_paying_twice(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    count = 4
    before = _created(fake_flux)
    fake_flux.duration = 30.0
    # Each try's check before deferring hangs: the worker is killed while it waits there.
    fake_flux.add_fault(Fault(endpoint="poll", delay=300, times=count))
    try:
        run_id = start_batch(cluster, DEFERRED, count, output)
        _wait(cluster, lambda: _created(fake_flux) - before == count, "every task submitted")
        ids = flux_task_ids(cluster, DEFERRED, run_id)
        _wait(
            cluster,
            lambda: len(ids) == count and all(polls_of(fake_flux, f) >= 1 for f in ids.values()),
            "every try's check before deferring",
        )
        assert count_in(cluster, DEFERRED, run_id, "running") == count
        cluster.kill("worker-1")
    finally:
        fake_flux.duration = FAKE_DURATION
        fake_flux.clear_faults()
        if not cluster.components["worker-1"].running:
            cluster.start_component("worker-1")
    tries = _all_succeeded(cluster, DEFERRED, run_id, count)

    assert _created(fake_flux) - before == count
    assert tries == [2] * count
    report(
        f"D3: worker killed between submit and defer: {count} retried, re-attached, 0 paid twice"
    )


def test_d3_a_killed_worker_during_a_wait_on_the_worker_is_retried_without_paying_twice(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    count = 4
    before = _created(fake_flux)
    run_id = start_batch(cluster, ON_WORKER, count, output)
    _wait(cluster, lambda: _created(fake_flux) - before == count, "every task submitted")
    ids = flux_task_ids(cluster, ON_WORKER, run_id)
    _wait(
        cluster,
        lambda: len(ids) == count and all(polls_of(fake_flux, f) >= 3 for f in ids.values()),
        "every worker polling",
    )
    cluster.kill("worker-1")
    killed_at = time.monotonic()
    cluster.start_component("worker-1")
    _wait(
        cluster,
        lambda: all(polls_of(fake_flux, f, killed_at) >= 2 for f in ids.values()),
        "every retry polling the same task again",
    )
    for flux_task_id in ids.values():
        fake_flux.complete(flux_task_id)
    tries = _all_succeeded(cluster, ON_WORKER, run_id, count)

    assert _created(fake_flux) - before == count
    assert tries == [2] * count
    report(f"D3: worker killed while {count} waited on it: retried, re-attached, 0 paid twice")


def test_d4_a_postgres_restart_while_generations_wait(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    deferred, on_worker = 10, 4
    before = _created(fake_flux)
    deferred_run = start_batch(cluster, DEFERRED, deferred, output / "deferred")
    worker_run = start_batch(cluster, ON_WORKER, on_worker, output / "worker")
    waiting = _waiting(cluster, fake_flux, DEFERRED, deferred_run, deferred)
    _wait(
        cluster,
        lambda: _created(fake_flux) - before == deferred + on_worker,
        "every task submitted",
    )
    polling = flux_task_ids(cluster, ON_WORKER, worker_run)
    _wait(
        cluster,
        lambda: all(polls_of(fake_flux, f) >= 3 for f in polling.values()),
        "every worker polling",
    )

    cluster.postgres.restart()
    restarted_at = time.monotonic()
    # Every component is still up (a dead one fails this wait) and reports healthy again ...
    _wait(cluster, lambda: cluster.health()[0], "the components to report healthy again")
    # ... and the waits go on: each trigger and each worker polls again.
    _wait(
        cluster,
        lambda: all(
            polls_of(fake_flux, f, restarted_at) >= 1
            for f in [*waiting.values(), *polling.values()]
        ),
        "every wait polling after the restart",
    )
    for flux_task_id in [*waiting.values(), *polling.values()]:
        fake_flux.complete(flux_task_id)
    tries = _all_succeeded(cluster, DEFERRED, deferred_run, deferred)
    tries += _all_succeeded(cluster, ON_WORKER, worker_run, on_worker)

    assert _created(fake_flux) - before == deferred + on_worker
    report(
        f"D4: PostgreSQL restarted under {deferred} deferred and {on_worker} worker waits: all "
        f"succeeded, {sum(t - 1 for t in tries)} retries, 0 paid twice"
    )


def test_d5_the_key_is_in_no_dump_no_redis_value_and_no_log(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    search = KeySearch(API_KEY, decode_base64=True)
    snapshots: list[dict[str, object]] = []
    # A server message that echoes the key, on a create: the task fails without retry.
    fake_flux.add_fault(
        Fault(endpoint="create", status=422, message=f"key {API_KEY} refused", times=1)
    )
    fake_flux.duration = 2.0
    try:
        with Sampler(lambda: snapshots.append(cluster.redis.snapshot()), 0.5):
            echo_run = cluster.trigger_dag("flux_text_to_image")
            assert cluster.wait_for_run("flux_text_to_image", echo_run, timeout=300) == "failed"
            run_id = start_batch(cluster, DEFERRED, 4, output)
            _all_succeeded(cluster, DEFERRED, run_id, 4)
    finally:
        fake_flux.duration = FAKE_DURATION
        fake_flux.clear_faults()

    dump = cluster.postgres.dump()
    search.look("pg_dump", dump)
    for index, snapshot in enumerate(snapshots):
        for key, value in snapshot.items():
            search.look(f"redis snapshot {index}: {key}", f"{key} {value}")
    logs = cluster.log_files()
    for path in logs:
        search.look(str(path), path.read_bytes())
    assert search.found == [], "\n".join(search.found)

    # Positive controls: the places searched hold what the runs left there.
    assert "flux_default" in dump  # the connection row, its password encrypted
    assert run_id in dump
    messages = [k for s in snapshots for k in s if "unacked" in k or k.endswith(":default")]
    assert messages, "no Celery message was seen in Redis"
    flux_ids = flux_task_ids(cluster, DEFERRED, run_id).values()
    assert any(fid in path.read_text(errors="replace") for path in logs for fid in flux_ids)
    report(
        f"D5: key found 0 times in a pg_dump ({len(dump):,} characters), "
        f"{len(snapshots)} Redis snapshots ({sum(len(s) for s in snapshots):,} keys) and "
        f"{len(logs)} log files of every process"
    )
