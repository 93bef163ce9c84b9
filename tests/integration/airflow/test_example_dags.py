"""Every example DAG runs green under ``dag.test()`` against the fake API, with real files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from flux_provider.testing import FakeFluxServer
from tests.conftest import load_dag
from tests.support.fake import prompt_of

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture(params=["scheduled", "no-logical-date"])
def when(request: pytest.FixtureRequest) -> dict[str, Any]:
    """How the run is made: with a logical date (as the scheduler does), or without one (as a
    run triggered through the REST API may be), where ``{{ ds }}`` would be undefined."""
    return {} if request.param == "scheduled" else {"logical_date": None}


def _xcom(run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key=key)
            .filter_by(map_index=map_index)
            .one()
        )
        return row.value


def _assert_stored(stored: list[dict[str, Any]], folder: Path) -> None:
    assert stored
    for image in stored:
        path = Path(image["location"].removeprefix("file://"))
        assert path.parent == folder
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) == image["bytes"]
        assert hashlib.sha256(data).hexdigest() == image["sha256"]


def test_text_to_image(fake_api: FakeFluxServer, tmp_path: Path, when: dict[str, Any]) -> None:
    run = load_dag("flux_text_to_image").test(run_conf={"output_dir": str(tmp_path)}, **when)
    assert run.state == "success"
    assert (run.logical_date is None) == ("logical_date" in when)
    (task,) = fake_api.tasks.values()
    assert prompt_of(task).endswith(run.run_after.strftime("%Y-%m-%d"))
    result = _xcom(run, "generate_hero_image")
    assert result["state"] == "success"
    assert result["flux_task_id"] == _xcom(run, "generate_hero_image", "flux_task_id")
    _assert_stored(result["stored"], tmp_path)
    # The link opens the first result image (a local file is not browsable).
    assert _xcom(run, "generate_hero_image", "_link_FluxResultLink") == result["result_urls"][0]
    assert fake_api.stats.tasks_created == 1


def test_edit_with_reference_images(
    fake_api: FakeFluxServer, tmp_path: Path, when: dict[str, Any]
) -> None:
    run = load_dag("flux_edit_reference_images").test(
        run_conf={"output_dir": str(tmp_path), "style": "neon night"}, **when
    )
    assert run.state == "success"
    (task,) = fake_api.tasks.values()
    assert task.input["img_urls"] == [
        "https://images.example.com/uploads/sku-1042-front.jpg",
        "https://images.example.com/uploads/sku-1042-side.jpg",
    ]
    assert "neon night" in prompt_of(task)
    _assert_stored(_xcom(run, "restyle_product_photos")["stored"], tmp_path)


def test_mapped_batch(fake_api: FakeFluxServer, tmp_path: Path, when: dict[str, Any]) -> None:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("flux_api", 4, "FLUX API", include_deferred=False)
    run = load_dag("flux_mapped_batch").test(run_conf={"output_dir": str(tmp_path)}, **when)
    assert run.state == "success"
    mapped = [ti for ti in run.get_task_instances() if ti.task_id == "generate"]
    assert len(mapped) == 4
    assert {ti.state for ti in mapped} == {"success"}
    assert fake_api.stats.tasks_created == 4
    prompts = sorted(prompt_of(task) for task in fake_api.tasks.values())
    assert prompts[0] == "A ceramic vase with dried grasses on a shelf, catalogue photo"
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_asset_producer_attaches_what_it_made(
    fake_api: FakeFluxServer, tmp_path: Path, when: dict[str, Any]
) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    run = load_dag("flux_asset_producer").test(run_conf={"output_dir": str(tmp_path)}, **when)
    assert run.state == "success"
    result = _xcom(run, "generate_banner")
    with create_session() as session:
        events = [
            e.extra for e in session.query(AssetEvent).filter_by(source_run_id=run.run_id).all()
        ]
    assert events == [
        {
            "flux_task_id": result["flux_task_id"],
            "result_urls": result["result_urls"],
            "credits": result["credits"],
            "completed_at": result["completed_at"],
            "duration_s": result["duration_s"],
            "stored": [s["location"] for s in result["stored"]],
        }
    ]
    consumer = load_dag("flux_asset_consumer").test()
    assert consumer.state == "success"


def test_sensor_waits_for_an_external_task(fake_api: FakeFluxServer, when: dict[str, Any]) -> None:
    flux_task_id = fake_api.submit({"prompt": "submitted by the web app"})
    run = load_dag("flux_sensor_external_task").test(
        run_conf={"flux_task_id": flux_task_id}, **when
    )
    assert run.state == "success"
    assert _xcom(run, "report") == [f"{fake_api.base_url}/files/{flux_task_id}/0.png"]
    assert fake_api.stats.create_requests == 0


def test_images_go_to_an_absolute_folder_under_the_airflow_home(fake_api: FakeFluxServer) -> None:
    folder = Path(os.environ["AIRFLOW_HOME"]) / "flux_output"
    dag = load_dag("flux_text_to_image")
    assert dag.params["output_dir"] == str(folder)
    run = dag.test(logical_date=None)
    assert run.state == "success"
    _assert_stored(_xcom(run, "generate_hero_image")["stored"], folder)
