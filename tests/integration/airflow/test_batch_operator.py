"""``FluxGenerateImageBatchOperator`` through real Airflow runs (``dag.test()``) and the fake API.

Each case checks the items the task returns, the files it stored, and what the fake API was
asked: every item is paid once, plus once per retryable failure.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from flux_provider.api.batch.journal import JOURNAL_FOLDER
from flux_provider.operators import FluxGenerateImageBatchOperator
from flux_provider.testing import FakeFluxServer, Fault
from tests.conftest import load_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPTS = [f"catalogue item {n}, studio photo" for n in range(6)]


def _run_with_id(dag_id: str, **conf: Any) -> tuple[str, int, Any, str]:
    """Run a batch test DAG: its state, the task's last try, its return value and the run id."""
    run = load_dag(dag_id).test(run_conf=conf)
    (ti,) = run.get_task_instances()
    return str(run.state), int(ti.try_number), ti.xcom_pull(task_ids="batch"), run.run_id


def _run(dag_id: str, **conf: Any) -> tuple[str, int, Any]:
    """Run a batch test DAG: its state, the task's last try and its return value."""
    return _run_with_id(dag_id, **conf)[:3]


def _asset_extra(run_id: str) -> dict[str, Any]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        (event,) = session.query(AssetEvent).filter_by(source_run_id=run_id).all()
        return dict(event.extra)


def _check_stored(items: list[dict[str, Any]], out: Path) -> None:
    for item in items:
        (image,) = item["stored"]
        path = Path(image["location"].removeprefix("file://"))
        assert path.parent == out
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        assert data.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("dag_id", ["flux_batch_test_deferred", "flux_batch_test_worker"])
def test_every_item_is_generated_once_and_stored(
    fake_api: FakeFluxServer, tmp_path: Path, dag_id: str
) -> None:
    state, tries, result = _run(dag_id, prompts=PROMPTS, out=str(tmp_path))
    assert (state, tries) == ("success", 1)
    assert (result["succeeded"], result["failed"], result["credits"]) == (6, 0, 36.0)
    items = result["items"]
    assert [item["index"] for item in items] == list(range(6))
    assert [item["input"]["prompt"] for item in items] == PROMPTS
    assert {item["state"] for item in items} == {"success"}
    assert fake_api.stats.tasks_created == 6
    assert sorted(item["flux_task_id"] for item in items) == sorted(fake_api.tasks)
    _check_stored(items, tmp_path)
    # Once delivered, the journal is gone: clearing the task generates anew.
    assert not (tmp_path / JOURNAL_FOLDER).exists() or not any(
        (tmp_path / JOURNAL_FOLDER).rglob("*.json")
    )


def test_items_as_inputs_take_the_shared_defaults(fake_api: FakeFluxServer, tmp_path: Path) -> None:
    inputs = [{"prompt": "a fox", "seed": 5}, {"prompt": "a hen", "aspect_ratio": "1:1"}]
    state, _, result = _run("flux_batch_test_inputs", inputs=inputs, out=str(tmp_path))
    assert state == "success"
    sent = {task.input["prompt"]: task.input for task in fake_api.tasks.values()}
    assert sent["a fox"] == {"prompt": "a fox", "seed": 5, "aspect_ratio": "16:9"}
    assert sent["a hen"] == {"prompt": "a hen", "seed": 11, "aspect_ratio": "1:1"}
    assert result["items"][1]["input"] == sent["a hen"]


def test_a_bad_item_fails_the_task_before_anything_is_sent(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    state, tries, _ = _run(
        "flux_batch_test_deferred", prompts=["fine", "", "fine too"], out=str(tmp_path)
    )
    assert (state, tries) == ("failed", 1)  # no retry: the input itself is wrong
    assert fake_api.stats.requests == []


def test_bad_items_are_named_by_index_and_field() -> None:
    operator = FluxGenerateImageBatchOperator(
        task_id="named",
        download_to="/tmp/x",
        inputs=[{"prompt": "ok"}, {"prompt": "x", "seed": -3}],
    )
    with pytest.raises(
        ValueError, match=r"1 item of 2 invalid, nothing submitted: inputs\[1\]\.seed"
    ):
        operator.build_inputs()


def test_retryable_failures_are_submitted_again_by_the_next_try_and_nothing_else(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    fake_api.fail_next_tasks(2, code=501, message="generation failed")
    state, tries, result = _run("flux_batch_test_deferred", prompts=PROMPTS, out=str(tmp_path))
    assert (state, tries) == ("success", 2)
    assert result["succeeded"] == 6
    assert fake_api.stats.tasks_created == 6 + 2
    _check_stored(result["items"], tmp_path)


def test_a_hopeless_failure_is_never_submitted_again(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    fake_api.fail_next_tasks(1, code=400, message="NSFW content detected")
    state, tries, result, run_id = _run_with_id(
        "flux_batch_test_tolerant", prompts=PROMPTS, out=str(tmp_path)
    )
    assert (state, tries) == ("success", 1)
    assert (result["succeeded"], result["failed"]) == (5, 1)
    (failed,) = [item for item in result["items"] if item["state"] == "failed"]
    assert failed["retryable"] is False
    assert "refused" in failed["error"]
    assert fake_api.stats.tasks_created == 6
    extra = _asset_extra(run_id)
    assert extra["stored"] == [i["stored"][0]["location"] for i in result["items"] if "stored" in i]
    assert (extra["succeeded"], extra["failed"], extra["credits"]) == (5, 1, result["credits"])


def test_more_hopeless_failures_than_allowed_fail_without_retry(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    fake_api.fail_next_tasks(2, code=400, message="NSFW content detected")
    state, tries, _ = _run("flux_batch_test_tolerant", prompts=PROMPTS, out=str(tmp_path))
    assert (state, tries) == ("failed", 1)
    assert fake_api.stats.tasks_created == 6
    assert len(list(tmp_path.glob("*.png"))) == 4  # the others were stored all the same


def test_a_full_service_is_waited_for(fake_api: FakeFluxServer, tmp_path: Path) -> None:
    fake_api.add_fault(Fault(endpoint="create", status=429, retry_after=0.2, times=4))
    state, tries, result = _run("flux_batch_test_deferred", prompts=PROMPTS, out=str(tmp_path))
    assert (state, tries) == ("success", 1)
    assert result["succeeded"] == 6
    assert fake_api.stats.tasks_created == 6
    assert fake_api.stats.create_requests >= 6 + 1


def test_a_retry_re_attaches_to_everything_already_stored(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    state, tries, result = _run(
        "flux_batch_test_dies_after_storing", prompts=PROMPTS, out=str(tmp_path)
    )
    assert (state, tries) == ("success", 2)
    assert result["succeeded"] == 6
    assert fake_api.stats.tasks_created == 6


def test_the_credit_limit_is_checked_for_the_whole_batch(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    state, _, _ = _run("flux_batch_test_credit_limit", prompts=PROMPTS, out=str(tmp_path))
    assert state == "failed"
    assert fake_api.stats.tasks_created == 0
    assert fake_api.stats.estimate_requests == 1  # every item costs the same: one estimate


def test_the_example_catalogue_dag(fake_api: FakeFluxServer, tmp_path: Path) -> None:
    run = load_dag("flux_catalogue_batch").test(run_conf={"output_dir": str(tmp_path)})
    assert run.state == "success"
    ti = next(ti for ti in run.get_task_instances() if ti.task_id == "generate_catalogue")
    result = ti.xcom_pull(task_ids="generate_catalogue")
    assert result["succeeded"] == fake_api.stats.tasks_created == 4
    (day,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(list(day.glob("*.png"))) == 4
