"""OpenLineage through real Airflow runs: the OpenLineage provider's listener, a file transport.

Each run is a ``dag.test()`` against the fake API, with the provider's
listener writing every event to a JSON-lines file; the tests read the events
of one task back and check the datasets and facets the operator and the
sensor added. Deferrable tasks resume on a new operator instance (Airflow
copies the task for every run of it), and the listener asks that instance:
these runs prove the facets survive the deferral.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from flux_provider.lineage.openlineage import dataset_name
from flux_provider.testing import FakeFluxServer, Fault
from tests.conftest import API_KEY, DAGS_FOLDER, REPO, load_dag
from tests.integration.airflow.test_example_dags import _xcom
from tests.support.compat import HAS_TASK_STATE_STORE
from tests.support.fake import prompt_of

pytestmark = pytest.mark.usefixtures("airflow_db")


class EventLog:
    """The events the listener wrote to one file transport's log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text() if self.path.exists() else ""

    def of(self, job_name: str, event_type: str | None = None) -> list[dict[str, Any]]:
        """Events of the job ``<dag_id>.<task_id>``, oldest first, of one type if given."""
        events = [json.loads(line) for line in self.text().splitlines() if line.strip()]
        return [
            e
            for e in events
            if e["job"]["name"] == job_name and event_type in (None, e["eventType"])
        ]

    def one(self, job_name: str, event_type: str) -> dict[str, Any]:
        (event,) = self.of(job_name, event_type)
        return event


def _forget_hook_lineage() -> None:
    """Drop the hook lineage that earlier runs in this process collected.

    A worker runs one task per process, but ``dag.test()`` runs every test's
    tasks in this one; the listener reports hook lineage for events whose
    operator names no dataset, so a stale collector would leak into them.
    """
    try:
        from airflow.sdk import lineage as sdk_lineage

        sdk_lineage.get_hook_lineage_collector.cache_clear()
    except (ImportError, AttributeError):  # Airflow < 3.2: a module global
        # Gone from Airflow 3.2 on, so not found where the newest Airflow is installed.
        import airflow.lineage.hook as hook_lineage  # type: ignore[import-not-found]

        hook_lineage._hook_lineage_collector = None


@pytest.fixture
def lineage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EventLog]:
    """OpenLineage on, writing to a file, with its listener registered for task runs.

    The provider's plugin decides whether to register its listener when Airflow
    first loads plugins, which may have happened earlier in the session with
    OpenLineage unconfigured; the listener is then added here (and removed after).
    """
    from airflow.providers.openlineage import conf as openlineage_conf
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener
    from airflow.sdk.execution_time import task_runner

    log = EventLog(tmp_path / "openlineage.jsonl")
    transport = {"type": "file", "log_file_path": str(log.path), "append": True}
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps(transport))
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "False")
    assert not openlineage_conf.is_disabled()
    # The manager the task runner notifies, through its own import (from another module on Airflow
    # 3.1 than on 3.3), which mypy takes for private.
    manager = task_runner.get_listener_manager()  # type: ignore[attr-defined]
    listener = get_openlineage_listener()
    added = not manager.pm.is_registered(listener)
    manager.add_listener(listener)
    _forget_hook_lineage()
    yield log
    if added:
        manager.pm.unregister(listener)


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).isoformat()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _names(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def _assert_stored_outputs(event: dict[str, Any], result: dict[str, Any], folder: Path) -> None:
    """Each stored image is an output dataset named ``file`` + path, with size and SHA-256."""
    assert len(event["outputs"]) == len(result["stored"]) > 0
    for dataset, stored in zip(event["outputs"], result["stored"], strict=True):
        path = Path(stored["location"].removeprefix("file://"))
        assert path.parent == folder
        data = path.read_bytes()
        assert (dataset["namespace"], dataset["name"]) == ("file", str(path))
        statistics = dataset["outputFacets"]["outputStatistics"]
        assert (statistics["size"], statistics["fileCount"]) == (len(data), 1)
        image = dataset["facets"]["fluxImage"]
        assert image["sha256"] == hashlib.sha256(data).hexdigest()
        assert image["contentType"] == "image/png"


def _documented_sample() -> dict[str, Any]:
    """The COMPLETE event shown on the OpenLineage documentation page."""
    page = (REPO / "docs" / "lineage.md").read_text()
    block = page.split("```json\n", 1)[1].split("\n```", 1)[0]
    sample: dict[str, Any] = json.loads(block)
    return sample


def _public(facet: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in facet.items() if not key.startswith("_")}


def _assert_documented(event: dict[str, Any]) -> None:
    """The documented event is this one, up to what changes from run to run."""
    sample = _documented_sample()
    assert sample["eventType"] == event["eventType"]
    assert sample["job"] == {k: event["job"][k] for k in ("namespace", "name")}
    assert _names(sample["inputs"]) == _names(event["inputs"])
    varying = {"externalQueryId", "source", "createdAt", "completedAt"}
    facets = event["run"]["facets"]
    for name, shown in sample["run"]["facets"].items():
        emitted = _public(facets[name])
        assert set(shown) == set(emitted)
        assert {k: v for k, v in shown.items() if k not in varying} == {
            k: v for k, v in emitted.items() if k not in varying
        }
    (shown_output,) = sample["outputs"]
    (output,) = event["outputs"]
    assert shown_output["namespace"] == output["namespace"]
    assert {k: _public(v) for k, v in output["facets"].items()} == shown_output["facets"]
    assert {k: _public(v) for k, v in output["outputFacets"].items()} == shown_output[
        "outputFacets"
    ]


def _assert_secret_free(log: EventLog, *secrets: str) -> None:
    text = log.text()
    assert text
    for secret in (API_KEY, *secrets):
        assert secret not in text


def test_text_to_image_emits_the_stored_image_and_the_generation(
    fake_api: FakeFluxServer, lineage: EventLog, tmp_path: Path
) -> None:
    run = load_dag("flux_text_to_image").test(run_conf={"output_dir": str(tmp_path)})
    assert run.state == "success"
    result = _xcom(run, "generate_hero_image")
    (task,) = fake_api.tasks.values()
    prompt = prompt_of(task)
    job = "flux_text_to_image.generate_hero_image"

    asked = {
        "model": "flux-2-max",
        "promptSha256": _sha256(prompt),
        "seed": 20260101,
        "aspectRatio": "16:9",
        "resolution": "1K",
    }
    complete = lineage.one(job, "COMPLETE")
    facets = complete["run"]["facets"]
    assert facets["externalQuery"]["externalQueryId"] == result["flux_task_id"]
    assert facets["externalQuery"]["source"] == fake_api.base_url
    assert _public(facets["fluxGeneration"]) == {
        **asked,
        "createdAt": _iso(result["created_at"]),
        "completedAt": _iso(result["completed_at"]),
        "durationSeconds": result["duration_s"],
        "credits": result["credits"],
        "reattached": False,
    }
    assert "errorMessage" not in facets
    assert complete["inputs"] == []
    _assert_stored_outputs(complete, result, tmp_path)

    # The task deferred, so it ran twice: submit, then resume on a new operator instance.
    starts = lineage.of(job, "START")
    assert starts
    for start in starts:
        assert start["run"]["runId"] == complete["run"]["runId"]
        assert start["run"]["facets"]["fluxGeneration"].items() >= asked.items()
        assert "externalQuery" not in start["run"]["facets"]
        assert start["outputs"] == []
    _assert_secret_free(lineage, prompt)


def test_edit_example_reads_each_reference_image(
    fake_api: FakeFluxServer, lineage: EventLog, tmp_path: Path
) -> None:
    run = load_dag("flux_edit_reference_images").test(
        run_conf={"output_dir": str(tmp_path), "style": "neon night"}
    )
    assert run.state == "success"
    job = "flux_edit_reference_images.restyle_product_photos"
    references = [
        ("https://images.example.com", "/uploads/sku-1042-front.jpg"),
        ("https://images.example.com", "/uploads/sku-1042-side.jpg"),
    ]
    for start in lineage.of(job, "START"):
        assert _names(start["inputs"]) == references
    complete = lineage.one(job, "COMPLETE")
    assert _names(complete["inputs"]) == references
    generation = complete["run"]["facets"]["fluxGeneration"]
    assert generation["aspectRatio"] == "match_input_image"
    assert "inlineReferenceImages" not in generation
    _assert_stored_outputs(complete, _xcom(run, "restyle_product_photos"), tmp_path)
    _assert_documented(complete)
    (task,) = fake_api.tasks.values()
    _assert_secret_free(lineage, prompt_of(task))


def test_result_urls_are_the_outputs_when_nothing_is_stored(
    fake_api: FakeFluxServer, lineage: EventLog
) -> None:
    run = load_dag("flux_test_deferred").test()
    assert run.state == "success"
    (flux_task_id,) = fake_api.tasks
    complete = lineage.one("flux_test_deferred.generate", "COMPLETE")
    assert _names(complete["outputs"]) == [(fake_api.base_url, f"/files/{flux_task_id}/0.png")]
    (output,) = complete["outputs"]
    assert not output.get("facets")
    assert not output.get("outputFacets")
    generation = complete["run"]["facets"]["fluxGeneration"]
    assert generation["promptSha256"] == _sha256("a watercolour fox")
    assert "seed" not in generation
    _assert_secret_free(lineage, "a watercolour fox")


def test_a_rejected_submission_carries_the_apis_message(
    fake_api: FakeFluxServer, lineage: EventLog
) -> None:
    # A server that echoes the key back: the client redacts it before anything sees it.
    message = f"prompt rejected by content policy 7 (request signed with {API_KEY})"
    fake_api.add_fault(Fault(endpoint="create", status=422, message=message, times=None))
    run = load_dag("flux_test_deferred").test()
    assert run.state == "failed"
    assert fake_api.stats.create_requests == 1
    job = "flux_test_deferred.generate"
    assert lineage.of(job, "COMPLETE") == []
    fail = lineage.one(job, "FAIL")
    facets = fail["run"]["facets"]
    assert "prompt rejected by content policy 7" in facets["errorMessage"]["message"]
    assert "externalQuery" not in facets  # nothing was submitted
    assert facets["fluxGeneration"]["promptSha256"] == _sha256("a watercolour fox")
    assert fail["outputs"] == []
    _assert_secret_free(lineage, "a watercolour fox")


def test_a_timed_out_try_then_a_retry_that_reattaches(
    fake_api: FakeFluxServer, lineage: EventLog
) -> None:
    """Try 1 times out while deferred and fails on its resumed instance; try 2 re-attaches,
    defers, and completes on another resumed instance: both still know the task."""
    fake_api.duration = 2.5
    run = load_dag("flux_test_short_timeout").test()
    job = "flux_test_short_timeout.generate"
    fails = lineage.of(job, "FAIL")
    if not HAS_TASK_STATE_STORE:
        # Below Airflow 3.3 every try submits its own task, which outlasts the 1 s wait again:
        # each FAIL event still names the task its try submitted.
        assert run.state == "failed"
        assert lineage.of(job, "COMPLETE") == []
        assert sorted(
            fail["run"]["facets"]["externalQuery"]["externalQueryId"] for fail in fails
        ) == sorted(fake_api.tasks)
        assert all(fail["run"]["facets"]["fluxGeneration"]["reattached"] is False for fail in fails)
        _assert_secret_free(lineage)
        return
    assert run.state == "success"
    (flux_task_id,) = fake_api.tasks
    assert fails
    for fail in fails:
        facets = fail["run"]["facets"]
        assert facets["externalQuery"]["externalQueryId"] == flux_task_id
        assert "timeout" in facets["errorMessage"]["message"].lower()
    complete = lineage.one(job, "COMPLETE")
    assert complete["run"]["runId"] not in {fail["run"]["runId"] for fail in fails}
    facets = complete["run"]["facets"]
    assert facets["externalQuery"]["externalQueryId"] == flux_task_id
    assert facets["fluxGeneration"]["reattached"] is True
    _assert_secret_free(lineage)


def test_sensor_reports_the_task_it_waited_for(fake_api: FakeFluxServer, lineage: EventLog) -> None:
    flux_task_id = fake_api.submit({"prompt": "submitted by the web app"})
    run = load_dag("flux_sensor_external_task").test(run_conf={"flux_task_id": flux_task_id})
    assert run.state == "success"
    complete = lineage.one("flux_sensor_external_task.wait_for_generation", "COMPLETE")
    facets = complete["run"]["facets"]
    assert facets["externalQuery"] == {
        **{k: v for k, v in facets["externalQuery"].items() if k.startswith("_")},
        "externalQueryId": flux_task_id,
        "source": fake_api.base_url,
    }
    assert facets["fluxGeneration"]["credits"] > 0
    assert "promptSha256" not in facets["fluxGeneration"]  # the sensor never saw the prompt
    assert _names(complete["outputs"]) == [(fake_api.base_url, f"/files/{flux_task_id}/0.png")]
    _assert_secret_free(lineage, "submitted by the web app")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("file:///data/images/t_0.png", ("file", "/data/images/t_0.png")),
        ("file:///data/my%20images/t_0.png", ("file", "/data/my images/t_0.png")),
        ("/data/images/t_0.png", ("file", "/data/images/t_0.png")),
        ("file://nas.local/share/t_0.png", ("file://nas.local", "/share/t_0.png")),
        ("s3://bucket/catalogue/t_0.png", ("s3://bucket", "catalogue/t_0.png")),
        ("s3://aws_default@bucket/catalogue/t_0.png", ("s3://bucket", "catalogue/t_0.png")),
        ("gs://bucket/a/t_0.png", ("gs://bucket", "a/t_0.png")),
        ("gcs://bucket/a/t_0.png", ("gs://bucket", "a/t_0.png")),
        (
            "abfss://images@account.dfs.core.windows.net/a/t_0.png",
            ("abfss://images@account.dfs.core.windows.net", "a/t_0.png"),
        ),
        (
            "https://user:secret@cdn.example.com:8443/r/t_0.png?X-Amz-Signature=abc#top",
            ("https://cdn.example.com:8443", "/r/t_0.png"),
        ),
        ("data:image/png;base64,iVBORw0KGgo=", None),
        ("s3://bucket", None),
        ("relative/path.png", None),
    ],
)
def test_dataset_names_follow_openlineage_naming(
    location: str, expected: tuple[str, str] | None
) -> None:
    assert dataset_name(location) == expected


_WITHOUT_OPENLINEAGE = textwrap.dedent(
    """
    import importlib.abc
    import importlib.metadata
    import json
    import re
    import sys
    from pathlib import Path

    import importlib_metadata

    HIDDEN = {
        "apache-airflow-providers-openlineage",
        "openlineage-integration-common",
        "openlineage-python",
        "openlineage-sql",
    }


    def blocked(name):
        return name.split(".")[0] == "openlineage" or name.startswith(
            "airflow.providers.openlineage"
        )


    class NoOpenLineage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if blocked(name):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    def hide(metadata):
        discover = metadata.Distribution.discover

        def visible(cls, **kwargs):
            for dist in discover(**kwargs):
                name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
                if name not in HIDDEN:
                    yield dist

        metadata.Distribution.discover = classmethod(visible)


    # Not installed: neither importable nor listed among the installed distributions.
    sys.meta_path.insert(0, NoOpenLineage())
    hide(importlib.metadata)
    hide(importlib_metadata)

    from flux_provider.operators import FluxGenerateImageOperator
    from flux_provider.sensors import FluxTaskSensor
    from devtools.dags import load_dag

    operator = FluxGenerateImageOperator(task_id="t", prompt="p", input_urls=["https://h/a.png"])
    sensor = FluxTaskSensor(task_id="s", flux_task_id="task_1")
    answers = [
        operator.get_openlineage_facets_on_start(),
        operator.get_openlineage_facets_on_complete(None),
        operator.get_openlineage_facets_on_failure(None),
        sensor.get_openlineage_facets_on_complete(None),
    ]
    run = load_dag("flux_text_to_image", Path(sys.argv[1])).test(
        run_conf={"output_dir": sys.argv[2]}
    )
    loaded = [name for name in sys.modules if blocked(name)]
    report = {"answers": [repr(a) for a in answers], "state": str(run.state), "loaded": loaded}
    print("REPORT " + json.dumps(report))
    """
)


def test_without_openlineage_the_methods_answer_none_and_dags_run(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    """The OpenLineage provider made unimportable in a fresh interpreter, lineage configured."""
    events = tmp_path / "openlineage.jsonl"
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    env = {**os.environ, "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport)}
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OPENLINEAGE, str(DAGS_FOLDER), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    report = json.loads(line.removeprefix("REPORT "))
    assert report == {"answers": ["None"] * 4, "state": "success", "loaded": []}
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    assert fake_api.stats.tasks_created == 1
    assert not events.exists()


def test_a_batch_lists_every_reference_image_and_every_stored_image(
    fake_api: FakeFluxServer, lineage: EventLog, tmp_path: Path
) -> None:
    shared = "https://images.example.com/uploads/room.jpg"
    inputs = [
        {"prompt": "an armchair", "input_urls": [shared, "https://images.example.com/a.jpg"]},
        {"prompt": "a lamp", "input_urls": [shared]},
        {"prompt": "a rug"},
    ]
    run = load_dag("flux_batch_test_inputs").test(run_conf={"inputs": inputs, "out": str(tmp_path)})
    assert run.state == "success"
    complete = lineage.one("flux_batch_test_inputs.batch", "COMPLETE")
    assert _names(complete["inputs"]) == [
        ("https://images.example.com", "/uploads/room.jpg"),
        ("https://images.example.com", "/a.jpg"),
    ]
    result = _xcom(run, "batch")
    stored = [item["stored"][0] for item in result["items"]]
    assert _names(complete["outputs"]) == [
        ("file", image["location"].removeprefix("file://")) for image in stored
    ]
    for output, image in zip(complete["outputs"], stored, strict=True):
        assert output["facets"]["fluxImage"]["sha256"] == image["sha256"]
        assert output["outputFacets"]["outputStatistics"]["size"] == image["bytes"]
    facet = complete["run"]["facets"]["fluxBatch"]
    assert (facet["items"], facet["succeeded"], facet["failed"]) == (3, 3, 0)
    assert facet["credits"] == result["credits"]
