"""One batch task (``FluxGenerateImageBatchOperator``) on the Airflow users deploy, under faults.

One distributed Airflow serves the module (the ``cluster`` fixture: PostgreSQL, Redis, a Celery
worker of 8 slots, two triggerers taken for dead after 10 s). Each scenario runs
``flux_batch_one_task`` (``tests/dags/flux_distributed_dags.py``): one task generating every
prompt of the run, at most 8 at once, in a trigger; its journal and images in the scenario's
folder. The scenarios run in order and each leaves every component running:

- D6: the Celery worker SIGKILLed while the task executes, before it defers;
- D7: the triggerer running the batch's trigger SIGKILLed half way; the other adopts it;
- D8: PostgreSQL restarted half way;
- D9: a retry after items failed, three retryably and one hopelessly (moderation).

Each checks, from the fake API's own records: the creates are the items plus the retryably
failed ones (nothing paid twice), every image is stored exactly once (one file per item, no
other file), and the task ends ``success``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.distributed import DistributedAirflow
from flux_provider.testing import FakeFluxServer, Fault
from flux_provider.testing.tasks import FakeTask
from tests.dags.flux_distributed_dags import BATCH_IN_FLIGHT
from tests.e2e.distributed.conftest import (
    FAKE_DURATION,
    HEALTH_CHECK_THRESHOLD,
    HEARTBEAT_TIMEOUT,
    report,
)
from tests.e2e.distributed.support import TRIGGERERS, start_batch

pytestmark = pytest.mark.timeout(900)

DAG_ID = "flux_batch_one_task"
TASK_ID = "batch"
TRIGGER = "flux_provider.triggers.batch.FluxBatchTrigger"
COUNT = 40


@dataclass(frozen=True)
class Outcome:
    """How a batch run ended, read from Airflow and the fake."""

    tries: int
    result: dict[str, Any]
    tasks: dict[str, FakeTask]
    """The fake's tasks created by the run, by task id."""
    seconds: float


def _wait(
    cluster: DistributedAirflow, probe: Callable[[], Any], what: str, timeout: float = 600
) -> Any:
    """A bounded wait that also ends as soon as a component of the cluster dies."""
    return cluster.wait_until(probe, timeout, what)


def _task_instance(cluster: DistributedAirflow, run_id: str) -> tuple[str, int]:
    """The batch task's (state, try number)."""
    [(state, tries)] = cluster.postgres.query(
        "SELECT state, try_number FROM task_instance"
        " WHERE dag_id = %s AND run_id = %s AND task_id = %s",
        (DAG_ID, run_id, TASK_ID),
    )
    return str(state), int(tries)


def _result(cluster: DistributedAirflow, run_id: str) -> dict[str, Any]:
    """What the batch task returned."""
    [(value,)] = cluster.postgres.query(
        "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s"
        " AND key = 'return_value'",
        (DAG_ID, run_id, TASK_ID),
    )
    return dict(json.loads(value) if isinstance(value, str) else value)


def _images(output: Path) -> list[Path]:
    return sorted(output.glob("*.png")) if output.exists() else []


def _new_tasks(fake: FakeFluxServer, before: set[str]) -> dict[str, FakeTask]:
    return {tid: task for tid, task in fake.tasks.items() if tid not in before}


def _trigger_holder(cluster: DistributedAirflow) -> str | None:
    """The triggerer whose job holds the batch's trigger now (``None``: none does)."""
    jobs = {cluster.job_id(name): name for name in TRIGGERERS}
    held = [
        jobs.get(row.triggerer_id)
        for row in cluster.trigger_rows().values()
        if row.classpath == TRIGGER and row.triggerer_id is not None
    ]
    assert len(held) <= 1, held
    return held[0] if held else None


def _part_way(
    fake: FakeFluxServer, created_before: int, output: Path, stored: int
) -> Callable[[], bool]:
    """Whether ``stored`` images are stored while some items are not submitted yet."""

    def probe() -> bool:
        created = fake.stats.tasks_created - created_before
        return len(_images(output)) >= stored and created < COUNT

    return probe


def _finished(
    cluster: DistributedAirflow,
    fake: FakeFluxServer,
    run_id: str,
    output: Path,
    *,
    before: set[str],
    started: float,
    retried: int = 0,
    hopeless: int = 0,
) -> Outcome:
    """Wait for the run to end, then check what every scenario promises: the task succeeded,
    creates == items + ``retried`` (the retryably failed ones), and every item but the
    ``hopeless`` ones has exactly one stored image and no other file is in the folder."""
    state = cluster.wait_for_run(DAG_ID, run_id, timeout=900)
    seconds = time.monotonic() - started
    assert state == "success", cluster.tail()
    ti_state, tries = _task_instance(cluster, run_id)
    assert ti_state == "success"

    tasks = _new_tasks(fake, before)
    assert len(tasks) == COUNT + retried, Counter(t.status for t in tasks.values())
    prompts = Counter(str(task.input["prompt"]) for task in tasks.values())
    assert len(prompts) == COUNT
    visible = sorted(path.name for path in output.iterdir() if not path.name.startswith("."))
    images = _images(output)
    assert visible == [path.name for path in images]
    stored = [tasks[path.name.rsplit("_", 1)[0]] for path in images]
    assert all(task.status == "success" for task in stored)
    stored_prompts = Counter(str(task.input["prompt"]) for task in stored)
    assert len(stored_prompts) == len(stored) == COUNT - hopeless  # one image per item

    result = _result(cluster, run_id)
    assert (result["succeeded"], result["failed"]) == (COUNT - hopeless, hopeless)
    return Outcome(tries, result, tasks, seconds)


def test_d6_a_worker_killed_before_the_batch_defers_is_retried_without_paying_twice(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    """The worker validates the items, checks the credits, records the inputs and defers: it
    submits nothing (the trigger does), so a worker lost there has paid for nothing. The worker
    is killed while the try's balance check hangs; Airflow fails that try after the heartbeat
    timeout, and the retry submits every item once."""
    before, created = set(fake_flux.tasks), fake_flux.stats.tasks_created
    balance_checks = fake_flux.stats.balance_requests
    fake_flux.duration = 5.0
    fake_flux.add_fault(Fault(endpoint="balance", delay=300, times=1))
    started = time.monotonic()
    try:
        run_id = start_batch(cluster, DAG_ID, COUNT, output)
        _wait(
            cluster,
            lambda: fake_flux.stats.balance_requests > balance_checks,
            "the first try's balance check",
        )
        assert _task_instance(cluster, run_id) == ("running", 1)
        assert fake_flux.stats.tasks_created == created
        cluster.kill("worker-1")
        killed_at = time.monotonic()
        cluster.start_component("worker-1")
        _wait(cluster, lambda: _task_instance(cluster, run_id)[1] == 2, "the retry")
        retry_after = time.monotonic() - killed_at
        outcome = _finished(cluster, fake_flux, run_id, output, before=before, started=started)
    finally:
        fake_flux.clear_faults()
        fake_flux.duration = FAKE_DURATION

    assert outcome.tries == 2
    report(
        f"D6: worker killed before the batch deferred (nothing submitted); the retry began "
        f"{retry_after:.0f} s later (heartbeat timeout {HEARTBEAT_TIMEOUT:g} s) and stored all "
        f"{COUNT} with {len(outcome.tasks)} creates; {outcome.seconds:.0f} s in all"
    )


def test_d7_a_killed_triggerers_batch_is_adopted_and_finished_without_paying_twice(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    """Once a third of the images are stored, while 8 generate and the rest wait to be
    submitted, the triggerer running the batch's trigger is SIGKILLed. The other takes the
    trigger over once the dead one's heartbeat is stale, re-reads the journal, re-attaches to
    every recorded task and submits the rest: the same try, nothing paid twice.

    A kill that lands between the API accepting a create and the journal recording its task
    id (milliseconds) would pay for that item twice: the API takes no idempotency key.
    """
    before, created = set(fake_flux.tasks), fake_flux.stats.tasks_created
    fake_flux.duration = 10.0
    started = time.monotonic()
    try:
        run_id = start_batch(cluster, DAG_ID, COUNT, output)
        _wait(cluster, _part_way(fake_flux, created, output, COUNT // 3), "a third stored")
        victim = _wait(cluster, lambda: _trigger_holder(cluster), "a triggerer holding it")
        survivor = next(name for name in TRIGGERERS if name != victim)
        submitted = fake_flux.stats.tasks_created - created
        stored = len(_images(output))
        cluster.kill(victim)
        killed_at = time.monotonic()
        assert submitted < COUNT
        try:
            _wait(
                cluster,
                lambda: _trigger_holder(cluster) == survivor,
                "the other triggerer to adopt the batch",
                timeout=300,
            )
            adoption = time.monotonic() - killed_at
        finally:
            cluster.start_component(victim)
        outcome = _finished(cluster, fake_flux, run_id, output, before=before, started=started)
    finally:
        fake_flux.duration = FAKE_DURATION

    assert outcome.tries == 1  # the trigger ran again in the same try
    report(
        f"D7: killed {victim} running the batch with {stored} of {COUNT} stored, "
        f"{submitted - stored} generating or storing and {COUNT - submitted} not submitted; "
        f"{survivor} held it {adoption:.1f} s later (threshold {HEALTH_CHECK_THRESHOLD:g} s) "
        f"and finished it in the same try: {len(outcome.tasks)} creates, {COUNT} images; "
        f"{outcome.seconds:.0f} s in all"
    )


def test_d8_a_postgres_restart_half_way_through_a_batch(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    """PostgreSQL restarts while the trigger generates: the trigger's journal is beside the
    images, not in the database, so the batch goes on and ends as if nothing happened."""
    before, created = set(fake_flux.tasks), fake_flux.stats.tasks_created
    fake_flux.duration = 10.0
    started = time.monotonic()
    try:
        run_id = start_batch(cluster, DAG_ID, COUNT, output)
        _wait(cluster, _part_way(fake_flux, created, output, BATCH_IN_FLIGHT), "a wave stored")
        stored = len(_images(output))
        cluster.postgres.restart()
        _wait(cluster, lambda: cluster.health()[0], "the components to report healthy again")
        outcome = _finished(cluster, fake_flux, run_id, output, before=before, started=started)
    finally:
        fake_flux.duration = FAKE_DURATION

    report(
        f"D8: PostgreSQL restarted with {stored} of {COUNT} stored: every component stayed up, "
        f"the batch ended in try {outcome.tries} with {len(outcome.tasks)} creates and "
        f"{COUNT} images; {outcome.seconds:.0f} s in all"
    )


def test_d9_a_retry_submits_the_retryable_failures_and_never_the_hopeless_one(
    cluster: DistributedAirflow, fake_flux: FakeFluxServer, output: Path
) -> None:
    """Four generations fail: one refused by moderation (400, "NSFW"), three for the
    service's own reasons (501). Four failures are over ``allowed_failures=1``, and three of
    them a retry can help, so the try fails and Airflow retries it. The retry submits the three
    again and nothing else; the moderated item is never submitted again, and as the one
    failure allowed it leaves the task ``success``."""
    before = set(fake_flux.tasks)
    fake_flux.duration = 10.0
    fake_flux.fail_next_tasks(1, code=400, message="NSFW content detected")
    fake_flux.fail_next_tasks(3, code=501, message="generation failed")
    started = time.monotonic()
    try:
        run_id = start_batch(cluster, DAG_ID, COUNT, output)
        outcome = _finished(
            cluster,
            fake_flux,
            run_id,
            output,
            before=before,
            started=started,
            retried=3,
            hopeless=1,
        )
    finally:
        fake_flux.duration = FAKE_DURATION

    assert outcome.tries == 2
    failed = [task for task in outcome.tasks.values() if task.status == "failed"]
    assert sorted(task.fail_code for task in failed) == [400, 501, 501, 501]
    created = Counter(str(task.input["prompt"]) for task in outcome.tasks.values())
    for task in failed:
        assert created[str(task.input["prompt"])] == (1 if task.fail_code == 400 else 2)
    [moderated] = [item for item in outcome.result["items"] if item["state"] == "failed"]
    [refused] = [task for task in failed if task.fail_code == 400]
    assert moderated["input"]["prompt"] == refused.input["prompt"]
    assert moderated["retryable"] is False
    report(
        f"D9: 1 moderated and 3 retryable failures out of {COUNT}: the retry submitted the 3 "
        f"again and not the moderated one ({len(outcome.tasks)} creates), {COUNT - 1} images, "
        f"success in try {outcome.tries} with the 1 allowed failure; {outcome.seconds:.0f} s"
    )
