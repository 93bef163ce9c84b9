"""The plugin's routes in Airflow's own API server app, against results of real DAG runs.

``dag.test()`` runs the text-to-image example (one image, stored) and the mapped batch against
the fake API; the routes then read those runs' XComs from the metadata database and stream the
stored files. Who may see them is the auth manager's decision: no credential is a 401, a user
without access to the DAG a 403, and only what a task recorded can be served.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from flux_provider.testing import FakeFluxServer
from tests.conftest import API_KEY, load_dag
from tests.integration.plugins.auth import OUTSIDER
from tests.integration.plugins.conftest import bearer

TEXT_DAG = "flux_text_to_image"
TEXT_TASK = "generate_hero_image"
BATCH_DAG = "flux_mapped_batch"
OPEN_DAG = "flux_edit_reference_images"


def _path(*parts: object) -> str:
    return "/".join(quote(str(part), safe="") for part in parts)


@pytest.fixture(scope="module")
def runs(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One finished run of each example DAG the tests look at, and the stored files."""
    output = tmp_path_factory.mktemp("flux-images")
    with (
        pytest.MonkeyPatch.context() as patch,
        FakeFluxServer(api_key=API_KEY, duration=0.3) as fake,
    ):
        patch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", fake.airflow_connection_json())
        made = {
            dag_id: load_dag(dag_id).test(run_conf={"output_dir": str(output / dag_id)})
            for dag_id in (TEXT_DAG, BATCH_DAG, OPEN_DAG)
        }
        assert all(run.state == "success" for run in made.values())
        yield {"runs": made, "output": output, "fake": fake}


def _result(run: Any, task_id: str, map_index: int = -1) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id)
            .filter_by(key="return_value", map_index=map_index)
            .one()
        )
        value: dict[str, Any] = row.value
        return value


def _ti(run: Any, task_id: str = TEXT_TASK, map_index: int | str = -1) -> str:
    return "/flux/ti/" + _path(run.dag_id, run.run_id, task_id, map_index)


def _image(run: Any, index: int = 0, task_id: str = TEXT_TASK, map_index: int = -1) -> str:
    return "/flux/images/" + _path(run.dag_id, run.run_id, task_id, map_index, index)


def _route(run: Any, kind: str) -> str:
    """The path of one of the plugin's routes for ``run``'s text-to-image task."""
    if kind == "task":
        return _ti(run)
    if kind == "gallery":
        return "/flux/run/" + _path(run.dag_id, run.run_id)
    return _image(run)


def test_the_task_tab_shows_each_image_with_what_made_it(
    api_server: TestClient, runs: dict[str, Any]
) -> None:
    run = runs["runs"][TEXT_DAG]
    result = _result(run, TEXT_TASK)
    [stored] = result["stored"]

    page = api_server.get(_ti(run), headers=bearer("admin"))

    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for shown in (
        result["flux_task_id"],
        stored["sha256"],
        result["input"]["aspect_ratio"],
        result["input"]["resolution"],
        "6",  # credits
        stored["location"],
    ):
        assert shown in html, shown
    # The prompt is shown escaped, as text.
    assert result["input"]["prompt"].replace(",", ",") in html
    [src] = re.findall(r"<img src='([^']+)'", html)
    assert src == _image(run)
    assert API_KEY not in html


def test_the_page_of_a_task_that_is_not_mapped_takes_the_unreplaced_placeholder(
    api_server: TestClient, runs: dict[str, Any]
) -> None:
    run = runs["runs"][TEXT_DAG]
    page = api_server.get(_ti(run, map_index="{MAP_INDEX}"), headers=bearer("admin"))
    assert page.status_code == 200
    assert _result(run, TEXT_TASK)["flux_task_id"] in page.text


def test_the_stored_image_is_streamed_with_its_content_type(
    api_server: TestClient, runs: dict[str, Any]
) -> None:
    run = runs["runs"][TEXT_DAG]
    [stored] = _result(run, TEXT_TASK)["stored"]

    image = api_server.get(_image(run), headers=bearer("admin"))

    assert image.status_code == 200
    assert image.headers["content-type"] == stored["content_type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert hashlib.sha256(image.content).hexdigest() == stored["sha256"]
    assert len(image.content) == stored["bytes"]


def test_the_gallery_shows_every_image_of_a_mapped_batch_by_map_index(
    api_server: TestClient, runs: dict[str, Any]
) -> None:
    run = runs["runs"][BATCH_DAG]
    prompts = [
        p
        for p in Path("example_dags/data/catalogue_prompts.txt").read_text().splitlines()
        if p.strip()
    ]

    page = api_server.get("/flux/run/" + _path(run.dag_id, run.run_id), headers=bearer("admin"))

    assert page.status_code == 200
    html = page.text
    labels = re.findall(r"<div class='label'>([^<]+)</div>", html)
    assert labels == [f"generate [{index}]" for index in range(len(prompts))]
    sources = re.findall(r"<img src='([^']+)'", html)
    assert sources == [
        _image(run, task_id="generate", map_index=index) for index in range(len(prompts))
    ]
    for index in range(len(prompts)):
        assert _result(run, "generate", index)["flux_task_id"] in html
    # Each card's image is served.
    assert api_server.get(sources[-1], headers=bearer("admin")).content.startswith(b"\x89PNG")


def test_a_task_without_a_result_says_so(api_server: TestClient, runs: dict[str, Any]) -> None:
    run = runs["runs"][OPEN_DAG]
    page = api_server.get(_ti(run, "pick_photos"), headers=bearer("admin"))
    assert page.status_code == 200
    # A plain @task: it makes no FLUX images, and the page says so plainly.
    assert "This task (@task) makes no FLUX images." in page.text


@pytest.mark.parametrize("kind", ["task", "gallery", "image"])
def test_without_a_credential_the_answer_is_401(
    api_server: TestClient, runs: dict[str, Any], kind: str
) -> None:
    run = runs["runs"][TEXT_DAG]
    path = _route(run, kind)
    assert api_server.get(path).status_code == 401
    assert api_server.get(path, headers={"Authorization": "Bearer not-a-token"}).status_code in (
        401,
        403,
    )


@pytest.mark.parametrize("kind", ["task", "gallery", "image"])
def test_a_user_without_access_to_the_dag_gets_403_and_nothing_else(
    api_server: TestClient, runs: dict[str, Any], kind: str
) -> None:
    run = runs["runs"][TEXT_DAG]
    path = _route(run, kind)
    denied = api_server.get(path, headers=bearer(OUTSIDER))
    assert denied.status_code == 403
    assert _result(run, TEXT_TASK)["flux_task_id"] not in denied.text
    assert not denied.content.startswith(b"\x89PNG")
    # The same user sees a DAG the auth manager lets them read.
    other = runs["runs"][OPEN_DAG]
    assert (
        api_server.get(_ti(other, "restyle_product_photos"), headers=bearer(OUTSIDER)).status_code
        == 200
    )


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(lambda run: _image(run, index=1), id="index-past-the-result"),
        pytest.param(lambda run: _image(run, index=-1), id="negative-index"),
        pytest.param(lambda run: _image(run, task_id="no_such_task"), id="other-task"),
        pytest.param(
            lambda run: "/flux/images/" + _path(TEXT_DAG, "other_run", TEXT_TASK, -1, 0),
            id="other-run",
        ),
        pytest.param(
            lambda run: (
                "/flux/images/"
                + _path(TEXT_DAG, run.run_id, TEXT_TASK, -1)
                + "/..%2F..%2Fetc%2Fpasswd"
            ),
            id="a-path",
        ),
    ],
)
def test_only_locations_recorded_in_the_result_are_served(
    api_server: TestClient, runs: dict[str, Any], path: Any
) -> None:
    answer = api_server.get(path(runs["runs"][TEXT_DAG]), headers=bearer("admin"))
    assert answer.status_code in (404, 422), answer.text
    assert not answer.content.startswith(b"\x89PNG")


def test_a_stored_copy_that_is_gone_is_a_404(api_server: TestClient, runs: dict[str, Any]) -> None:
    run = runs["runs"][OPEN_DAG]
    [stored] = _result(run, "restyle_product_photos")["stored"]
    Path(stored["location"].removeprefix("file://")).unlink()
    path = _image(run, task_id="restyle_product_photos")
    answer = api_server.get(path, headers=bearer("admin"))
    assert answer.status_code == 404
    assert "missing" in answer.json()["detail"]
