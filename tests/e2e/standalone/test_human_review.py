"""The human-review recipe on a real ``airflow standalone``: approve publishes, reject does not.

Two runs of ``flux_human_review`` generate against the fake API; each waits in Airflow's
approval form, which the tests answer through the REST API as a reviewer's browser would:
one approved, one rejected. The form's body shows the image through the plugin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from devtools.standalone import StandaloneAirflow
from flux_provider.testing import FakeFluxServer
from tests.conftest import API_KEY, standalone_airflow

pytestmark = pytest.mark.timeout(600)

DAG_ID = "flux_human_review"


@pytest.fixture(scope="module")
def fake_flux() -> Iterator[FakeFluxServer]:
    with FakeFluxServer(api_key=API_KEY, duration=3600) as server:
        yield server


@pytest.fixture(scope="module")
def standalone(
    tmp_path_factory: pytest.TempPathFactory, fake_flux: FakeFluxServer
) -> Iterator[StandaloneAirflow]:
    with standalone_airflow(tmp_path_factory.mktemp("review-home"), fake_flux) as airflow:
        yield airflow


@pytest.fixture(scope="module")
def reviews(
    standalone: StandaloneAirflow,
    fake_flux: FakeFluxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """Two runs waiting for a reviewer, each with its folders: ``approve`` and ``reject``."""
    made: dict[str, dict[str, Any]] = {}
    for decision in ("approve", "reject"):
        folders = tmp_path_factory.mktemp(decision)
        conf = {"review_dir": str(folders / "review"), "publish_dir": str(folders / "published")}
        known = set(fake_flux.tasks)
        run_id = standalone.trigger_dag(DAG_ID, conf=conf)
        (flux_task_id,) = standalone.wait_until(
            partial(_new_tasks, fake_flux, known), 240, "the generation's submission"
        )
        made[decision] = {"run_id": run_id, "flux_task_id": flux_task_id, **conf}
    for review in made.values():
        standalone.wait_until(
            partial(standalone.deferral_released, DAG_ID, review["run_id"], "generate", 1),
            240,
            "the scheduler to hear that the generation deferred",
        )
        fake_flux.complete(review["flux_task_id"])
    for review in made.values():
        review["form"] = standalone.wait_until(
            partial(_form, standalone, review["run_id"]), 240, "the approval form"
        )
        # The workload that parked the task for its answer has ended, and the scheduler knows:
        # a report of that end arriving after the answer resumed the task would fail it
        # (apache/airflow#72716). A person never answers that fast.
        standalone.wait_until(
            partial(standalone.deferral_released, DAG_ID, review["run_id"], "review", 1),
            240,
            "the scheduler to hear that the review task is waiting",
        )
    return made


def _new_tasks(fake: FakeFluxServer, known: set[str]) -> set[str]:
    """The ids of the tasks ``fake`` received beyond ``known``."""
    return set(fake.tasks) - known


def _form_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails"


def _form(standalone: StandaloneAirflow, run_id: str) -> dict[str, Any] | None:
    answer = standalone.request("GET", _form_path(run_id))
    return dict(answer.json()) if answer.status_code == 200 else None


def _states(standalone: StandaloneAirflow, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in standalone.task_instances(DAG_ID, run_id)}


def _decide(standalone: StandaloneAirflow, run_id: str, option: str) -> dict[str, str]:
    """Answer the form with ``option``; once the run ended (successfully), its task states."""
    standalone.api(
        "PATCH", _form_path(run_id), json={"chosen_options": [option], "params_input": {}}
    )
    assert standalone.wait_for_run(DAG_ID, run_id, timeout=240) == "success", standalone.tail()
    return _states(standalone, run_id)


def test_the_form_shows_the_image_and_what_made_it(
    standalone: StandaloneAirflow, reviews: dict[str, dict[str, Any]]
) -> None:
    review = reviews["approve"]
    form = review["form"]
    assert form["subject"] == "Publish this FLUX image?"
    assert form["options"] == ["Approve", "Reject"]
    image = f"flux/images/{DAG_ID}/{review['run_id'].replace(':', '%3A').replace('+', '%2B')}"
    assert f"![Image 0]({image}/generate/-1/0)" in form["body"], form["body"]
    assert f"| Flux task | `{review['flux_task_id']}` |" in form["body"]
    assert "stoneware mug" in form["body"]
    assert API_KEY not in form["body"]
    # The body's image, resolved against the API server's base URL, is the stored PNG.
    shown = standalone.request("GET", "/" + f"{image}/generate/-1/0")
    assert shown.status_code == 200
    assert shown.headers["content-type"] == "image/png"
    [stored] = Path(review["review_dir"]).glob("*.png")
    assert shown.content == stored.read_bytes()


def test_approval_publishes_the_image(
    standalone: StandaloneAirflow, reviews: dict[str, dict[str, Any]]
) -> None:
    review = reviews["approve"]
    assert _decide(standalone, review["run_id"], "Approve") == {
        "generate": "success",
        "review": "success",
        "publish": "success",
    }
    [reviewed] = Path(review["review_dir"]).glob("*.png")
    [published] = Path(review["publish_dir"]).glob("*.png")
    assert published.name == reviewed.name
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(reviewed.read_bytes()).hexdigest()
    assert standalone.xcom(DAG_ID, review["run_id"], "publish") == [published.as_uri()]


def test_rejection_publishes_nothing(
    standalone: StandaloneAirflow, reviews: dict[str, dict[str, Any]], fake_flux: FakeFluxServer
) -> None:
    review = reviews["reject"]
    assert _decide(standalone, review["run_id"], "Reject") == {
        "generate": "success",
        "review": "success",
        "publish": "skipped",
    }
    assert list(Path(review["review_dir"]).glob("*.png"))  # made and kept for the record ...
    assert not Path(review["publish_dir"]).exists()  # ... never published
    # Answering twice is refused: the decision stands.
    again = standalone.request(
        "PATCH",
        _form_path(review["run_id"]),
        json={"chosen_options": ["Approve"], "params_input": {}},
    )
    assert again.status_code == 409
    assert fake_flux.stats.tasks_created == 2
