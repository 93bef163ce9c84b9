"""Wire-format models: input validation, task-info parsing, state handling."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from flux_provider.errors import InvalidInputError
from flux_provider.models import (
    MAX_PROMPT_CHARS,
    ApiEnvelope,
    CreateTaskRequest,
    Flux2MaxInput,
    TaskInfo,
    TaskState,
    validate_input,
)

GOOD = {"prompt": "a red bicycle"}

BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("missing prompt", {}, "prompt"),
    ("empty prompt", {"prompt": ""}, "prompt"),
    ("blank prompt", {"prompt": "   \n\t"}, "prompt"),
    ("prompt not a string", {"prompt": 42}, "prompt"),
    ("prompt too long", {"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
    (
        "nine input urls",
        {**GOOD, "input_urls": [f"https://e.x/{i}.png" for i in range(9)]},
        "input_urls",
    ),
    ("file url", {**GOOD, "input_urls": ["file:///etc/passwd"]}, "input_urls"),
    ("javascript url", {**GOOD, "input_urls": ["javascript:alert(1)"]}, "input_urls"),
    ("relative url", {**GOOD, "input_urls": ["/images/a.png"]}, "input_urls"),
    ("input_urls a string", {**GOOD, "input_urls": "https://e.x/a.png"}, "input_urls"),
    ("bad aspect ratio", {**GOOD, "aspect_ratio": "5:3"}, "aspect_ratio"),
    ("unknown resolution", {**GOOD, "resolution": "8K"}, "resolution"),
    ("negative seed", {**GOOD, "seed": -1}, "seed"),
    ("float seed", {**GOOD, "seed": 1.5}, "seed"),
    ("string seed", {**GOOD, "seed": "7"}, "seed"),
    ("bool seed", {**GOOD, "seed": True}, "seed"),
    ("seed too large", {**GOOD, "seed": 2**40}, "seed"),
    ("safety tolerance 6", {**GOOD, "safety_tolerance": 6}, "safety_tolerance"),
    ("safety tolerance negative", {**GOOD, "safety_tolerance": -1}, "safety_tolerance"),
    ("unknown output format", {**GOOD, "output_format": "bmp"}, "output_format"),
    ("extra not JSON", {**GOOD, "style": {1, 2}}, "style"),
    ("extra NaN", {**GOOD, "guidance": math.nan}, "guidance"),
]


@pytest.mark.parametrize(("case", "data", "field"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_naming_the_field(
    case: str, data: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_input(data)
    assert field in str(info.value)
    assert info.value.retryable is False


def test_bad_choice_lists_allowed_values() -> None:
    with pytest.raises(InvalidInputError, match=r"aspect_ratio.*'16:9'.*got '5:3'"):
        validate_input({**GOOD, "aspect_ratio": "5:3"})


def test_non_mapping_input_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="mapping"):
        validate_input(["a prompt"])


def test_unknown_fields_pass_through_untouched() -> None:
    data = {**GOOD, "aspect_ratio": "16:9", "guidance": 3.5, "new_knob": {"nested": [1, "two"]}}
    assert validate_input(data).to_wire() == data


def test_unset_fields_are_omitted_from_the_wire() -> None:
    assert validate_input(GOOD).to_wire() == GOOD


def test_create_request_uses_camel_case_and_requires_the_model() -> None:
    request = CreateTaskRequest(callBackUrl="https://hooks.example/cb", input=GOOD)
    assert request.to_wire() == {
        "model": "flux-2-max",
        "callBackUrl": "https://hooks.example/cb",
        "input": GOOD,
    }
    with pytest.raises(ValueError, match="model"):
        CreateTaskRequest(model="flux-2-pro", input=GOOD)  # type: ignore[arg-type]


def _info(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "taskId": "task_flux-2_1765175490366",
        "model": "flux-2-max",
        "state": "success",
        "param": json.dumps({"model": "flux-2-max", "input": GOOD}),
        "resultJson": json.dumps({"resultUrls": ["https://cdn.example/a.png"]}),
        "failCode": "",
        "failMsg": "",
        "costTime": 15,
        "completeTime": 1698765432000,
        "createTime": 1698765400000,
        "updateTime": 1698765432000,
    }
    data.update(overrides)
    return data


def test_task_info_parses_string_encoded_fields() -> None:
    info = TaskInfo.model_validate(_info())
    assert info.state is TaskState.SUCCESS
    assert info.result_urls == ["https://cdn.example/a.png"]
    assert info.param == {"model": "flux-2-max", "input": GOOD}
    assert info.fail_code is None
    assert info.cost_time == 15
    assert info.completed_at is not None
    assert info.completed_at.year == 2023
    assert json.loads(json.dumps(info.summary()))["result_urls"] == info.result_urls


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_result_before_the_end(empty: str | None) -> None:
    info = TaskInfo.model_validate(_info(state="generating", resultJson=empty, param=empty))
    assert info.result_urls == []
    assert info.param is None
    assert not info.state.is_terminal


def test_unknown_future_state_does_not_crash() -> None:
    info = TaskInfo.model_validate(_info(state="upscaling"))
    assert info.state is TaskState.UNKNOWN
    assert info.raw_state == "upscaling"
    assert not info.state.is_terminal


def test_terminal_states() -> None:
    assert {s for s in TaskState if s.is_terminal} == {TaskState.SUCCESS, TaskState.FAIL}


def test_result_json_that_is_not_json_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="resultJson is not valid JSON"):
        TaskInfo.model_validate(_info(resultJson="{not json"))


def test_task_id_with_path_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="task id"):
        TaskInfo.model_validate(_info(taskId="../../etc/passwd"))


def test_failed_task_is_classified() -> None:
    retryable = TaskInfo.model_validate(_info(state="fail", failCode=500, failMsg="GPU crashed"))
    assert retryable.fail_code == "500"
    failure = retryable.failure()
    assert failure is not None
    assert failure.retryable
    refused = TaskInfo.model_validate(
        _info(state="fail", failCode="400", failMsg="content flagged by moderation")
    )
    failure = refused.failure()
    assert failure is not None
    assert not failure.retryable
    assert TaskInfo.model_validate(_info()).failure() is None


@pytest.mark.parametrize("key", ["msg", "message"])
def test_envelope_accepts_msg_or_message(key: str) -> None:
    envelope = ApiEnvelope.model_validate({"code": 402, key: "no credits", "data": None})
    assert envelope.text == "no credits"


def test_input_model_is_frozen_and_typed() -> None:
    model = Flux2MaxInput(prompt="x", seed=3)
    assert model.seed == 3
    with pytest.raises(ValueError, match="frozen"):
        model.seed = 4  # type: ignore[misc]
