"""``GenerationResult``: the typed result, written to XCom as the documented JSON and read back."""

from __future__ import annotations

from typing import Any

import pytest

from flux_provider.api.downloads import StoredImage
from flux_provider.api.models import TaskInfo, TaskState
from flux_provider.api.results import GenerationResult, MalformedResultError

TASK = TaskInfo(
    flux_task_id="task_5f0c",
    state=TaskState.SUCCESS,
    raw_state="success",
    result_urls=["https://cdn.example/out.png"],
    credits=6.0,
    created_at=1768900378.0,
    completed_at=1768900406.0,
    duration_s=28.0,
)
STORED = StoredImage(
    location="s3://bucket/catalogue/task_5f0c_0.png",
    bytes=1843211,
    sha256="ab" * 32,
    content_type="image/png",
    source_url="https://cdn.example/out.png",
)
DOCUMENTED_KEYS = [
    "flux_task_id",
    "state",
    "raw_state",
    "result_urls",
    "fail_code",
    "fail_msg",
    "credits",
    "created_at",
    "completed_at",
    "duration_s",
    "input",
    "stored",
]


def _result() -> GenerationResult:
    return GenerationResult(task=TASK, request={"prompt": "teapot", "seed": 7}, stored=[STORED])


def test_the_xcom_value_is_the_documented_json() -> None:
    value = _result().to_xcom()
    assert list(value) == DOCUMENTED_KEYS
    assert value["state"] == "success"
    assert value["fail_code"] is None
    assert value["input"] == {"prompt": "teapot", "seed": 7}
    assert value["stored"] == [
        {
            "location": "s3://bucket/catalogue/task_5f0c_0.png",
            "bytes": 1843211,
            "sha256": "ab" * 32,
            "content_type": "image/png",
            "source_url": "https://cdn.example/out.png",
        }
    ]


def test_input_and_stored_are_left_out_when_unknown() -> None:
    value = GenerationResult(task=TASK).to_xcom()
    assert list(value) == DOCUMENTED_KEYS[:-2]


def test_a_value_reads_back_to_the_same_result() -> None:
    result = _result()
    again = GenerationResult.from_xcom(result.to_xcom())
    assert again.task == result.task
    assert again.request == result.request
    assert list(again.stored or ()) == [STORED]
    assert again.locations == [STORED.location]
    assert again.result_urls == TASK.result_urls
    assert again.flux_task_id == "task_5f0c"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "task_5f0c",
        [],
        {"state": "success"},
        {"flux_task_id": "../../etc", "state": "success"},
        {**TASK.summary(), "input": "a prompt"},
        {**TASK.summary(), "stored": {"location": "x"}},
        {**TASK.summary(), "stored": ["file:///etc/passwd"]},
        {**TASK.summary(), "stored": [{**STORED.as_dict(), "bytes": "12"}]},
        {**TASK.summary(), "stored": [{**STORED.as_dict(), "bytes": True}]},
        {**TASK.summary(), "stored": [{**STORED.as_dict(), "bytes": -1}]},
        {**TASK.summary(), "stored": [{**STORED.as_dict(), "location": None}]},
        {**TASK.summary(), "stored": [{**STORED.as_dict(), "sha256": 12}]},
    ],
)
def test_what_is_not_a_result_is_refused(value: Any) -> None:
    with pytest.raises(MalformedResultError):
        GenerationResult.from_xcom(value)
