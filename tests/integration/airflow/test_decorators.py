"""``@task.flux_image`` and ``@task.flux_image_batch`` through real Airflow runs and the fake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flux_provider.testing import FakeFluxServer
from tests.conftest import load_dag
from tests.support.fake import prompt_of

pytestmark = pytest.mark.usefixtures("airflow_db")


def _results(run: Any, task_id: str) -> dict[int, Any]:
    return {
        ti.map_index: ti.xcom_pull(task_ids=task_id, map_indexes=ti.map_index)
        for ti in run.get_task_instances()
        if ti.task_id == task_id
    }


def test_the_decorators_are_registered_on_task() -> None:
    from airflow.sdk import task

    from flux_provider.decorators import flux_image_batch_task, flux_image_task

    assert task.flux_image is flux_image_task
    assert task.flux_image_batch is flux_image_batch_task


def test_the_function_writes_each_request_and_runs_once_per_task(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.log"
    run = load_dag("flux_decorator_test_single").test(
        run_conf={"out": str(tmp_path), "calls": str(calls)}
    )
    assert run.state == "success"
    # Deferred and resumed, each mapped task called its function once.
    assert sorted(calls.read_text().split()) == ["a-1", "b-2"]
    sent = [task.input for task in sorted(fake_api.tasks.values(), key=prompt_of)]
    assert sent == [
        {
            "prompt": "product a-1, studio photo",
            "seed": 7,
            "safety_tolerance": 2,
            "aspect_ratio": "16:9",
        },
        {
            "prompt": "product b-2, studio photo",
            "seed": 7,
            "safety_tolerance": 2,
            "aspect_ratio": "16:9",
        },
    ]
    results = _results(run, "shot")
    assert sorted(results) == [0, 1]
    for result in results.values():
        assert result["state"] == "success"
        assert result["input"]["seed"] == 7
        (stored,) = result["stored"]
        assert Path(stored["location"].removeprefix("file://")).parent == tmp_path


def test_a_function_that_returns_no_request_fails_without_retry_or_charge(
    fake_api: FakeFluxServer,
) -> None:
    run = load_dag("flux_decorator_test_bad").test()
    (ti,) = run.get_task_instances()
    assert (run.state, ti.try_number) == ("failed", 1)
    assert fake_api.stats.requests == []


def test_the_example_dag(fake_api: FakeFluxServer, tmp_path: Path) -> None:
    run = load_dag("flux_taskflow").test(run_conf={"output_dir": str(tmp_path)})
    assert run.state == "success"
    singles = _results(run, "product_shot")
    assert sorted(singles) == [0, 1, 2]
    assert all(result["state"] == "success" for result in singles.values())
    (batch,) = _results(run, "catalogue").values()
    assert (batch["succeeded"], batch["failed"]) == (3, 0)
    assert fake_api.stats.tasks_created == 6
    assert len(list((tmp_path / "single").glob("*.png"))) == 3
    assert len(list((tmp_path / "batch").glob("*.png"))) == 3
