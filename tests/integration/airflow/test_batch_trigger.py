"""``FluxBatchTrigger`` against the fake API: its kwargs, a restart mid-batch, a second runner."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from flux_provider.api.batch import BatchJournal, ItemState, batch_inputs, journal_key
from flux_provider.testing import FakeFluxServer
from flux_provider.triggers import FluxBatchTrigger
from tests.conftest import API_KEY

PROMPTS = [f"a paper crane, variant {n}" for n in range(8)]
KEY = journal_key("dag", "run", "batch", -1)


def _trigger(
    folder: Path, *, wait: float = 60, try_number: int = 1, **options: Any
) -> FluxBatchTrigger:
    settings: dict[str, Any] = {"max_in_flight": 3, "poll_interval": 0.05, **options}
    return FluxBatchTrigger(
        "flux_default",
        download_to=str(folder),
        journal_key=KEY,
        try_number=try_number,
        deadline=time.time() + wait,
        **settings,
    )


def _journal(folder: Path) -> BatchJournal:
    journal = BatchJournal(folder, KEY)
    journal.write_inputs(batch_inputs(PROMPTS, None))
    return journal


async def _events(trigger: FluxBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_kwargs_are_primitives_without_the_key(tmp_path: Path) -> None:
    from airflow.sdk.module_loading import import_string

    from tests.support.compat import serde

    classpath, kwargs = _trigger(tmp_path).serialize()
    assert classpath == "flux_provider.triggers.batch.FluxBatchTrigger"
    assert all(isinstance(v, (str, int, float, type(None))) for v in kwargs.values())
    restored = serde.deserialize(serde.serialize(kwargs))
    assert import_string(classpath)(**restored).serialize() == (classpath, kwargs)
    assert API_KEY not in repr(kwargs)


async def test_the_batch_runs_in_the_trigger(fake_api: FakeFluxServer, tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    (event,) = await _events(_trigger(tmp_path))
    assert event["kind"] == "batch"
    assert event["status"] == "ended"
    assert event["counts"]["stored"] == 8
    records = journal.records()
    assert {r.state for r in records.values()} == {ItemState.SUCCEEDED}
    assert fake_api.stats.tasks_created == 8
    assert len([name for name in os.listdir(tmp_path) if name.endswith(".png")]) == 8


async def test_a_trigger_rebuilt_after_a_restart_never_submits_twice(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    fake_api.duration = 3600.0  # nothing ends until the test says so
    journal = _journal(tmp_path)
    first = asyncio.ensure_future(_events(_trigger(tmp_path)))
    for _ in range(2000):
        if fake_api.stats.tasks_created == 3:
            break
        await asyncio.sleep(0.01)
    assert fake_api.stats.tasks_created == 3  # max_in_flight
    first.cancel()  # the triggerer dies
    await asyncio.gather(first, return_exceptions=True)
    submitted = {i: r.flux_task_id for i, r in journal.records().items()}
    assert sorted(submitted) == [0, 1, 2]
    for flux_task_id in fake_api.tasks:
        fake_api.complete(flux_task_id)
    fake_api.duration = 0.2
    (event,) = await _events(_trigger(tmp_path))  # re-created from the same kwargs
    assert event["status"] == "ended"
    assert event["counts"]["stored"] == 8
    assert fake_api.stats.tasks_created == 8
    records = journal.records()
    assert {i: records[i].flux_task_id for i in submitted} == submitted
    assert all(record.submissions == 1 for record in records.values())


async def test_a_runner_whose_claim_was_taken_over_stops_submitting(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    fake_api.duration = 3600.0
    journal = _journal(tmp_path)
    first = asyncio.ensure_future(_events(_trigger(tmp_path, wait=3)))
    for _ in range(2000):
        if fake_api.stats.tasks_created == 3:
            break
        await asyncio.sleep(0.01)
    journal.claim()  # another triggerer adopted the batch
    for flux_task_id in list(fake_api.tasks):
        fake_api.complete(flux_task_id)
    (event,) = await first
    assert event["status"] == "superseded"
    assert fake_api.stats.tasks_created == 3  # it submitted nothing after losing its claim


async def test_the_next_try_submits_only_the_failed_items(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    journal = _journal(tmp_path)
    fake_api.fail_next_tasks(2, code=501)
    (event,) = await _events(_trigger(tmp_path, try_number=1))
    assert (event["counts"]["stored"], event["counts"]["failed"]) == (6, 2)
    (event,) = await _events(_trigger(tmp_path, try_number=2))
    assert (event["counts"]["stored"], event["counts"]["failed"]) == (8, 0)
    assert fake_api.stats.tasks_created == 8 + 2
    assert sorted(r.submissions for r in journal.records().values()) == [1] * 6 + [2, 2]
