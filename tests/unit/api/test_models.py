"""The provider's models: input validation, states, the task summary."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from flux_provider.api.errors import InvalidInputError
from flux_provider.api.models import (
    MAX_PROMPT_CHARS,
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
    ("bad aspect ratio", {**GOOD, "aspect_ratio": "5/3"}, "aspect_ratio"),
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
    with pytest.raises(InvalidInputError, match=r"resolution.*'1K' or '2K'.*"):
        validate_input({**GOOD, "resolution": "4K"})
    with pytest.raises(InvalidInputError, match=r"aspect_ratio.*'16:9'.*got '5/3'"):
        validate_input({**GOOD, "aspect_ratio": "5/3"})


@pytest.mark.parametrize(
    "ratio", ["1:1", "16:9", "5:3", "7:5", "21:9", "auto", "match_input_image"]
)
def test_any_w_h_aspect_ratio_is_left_to_the_service(ratio: str) -> None:
    """API.md lists the common ratios and "...": the shape is checked, the service decides."""
    assert validate_input({**GOOD, "aspect_ratio": ratio}).aspect_ratio == ratio


def test_non_mapping_input_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="mapping"):
        validate_input(["a prompt"])


def test_unknown_fields_pass_through_untouched() -> None:
    data = {**GOOD, "aspect_ratio": "16:9", "guidance": 3.5, "new_knob": {"nested": [1, "two"]}}
    assert validate_input(data).parameters() == data


def test_unset_fields_are_omitted_from_the_wire() -> None:
    assert validate_input(GOOD).parameters() == GOOD


def test_data_image_uris_are_reference_images() -> None:
    uri = "data:image/png;base64,iVBORw0KGgo="
    assert validate_input({**GOOD, "input_urls": [uri, "https://e.x/a.png"]}).input_urls == [
        uri,
        "https://e.x/a.png",
    ]


@pytest.mark.parametrize(
    "uri", ["data:text/plain;base64,aGk=", "data:image/png,raw", "data:image/png;base64,<script>"]
)
def test_other_data_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidInputError, match=r"input_urls\[0\].*data:image"):
        validate_input({**GOOD, "input_urls": [uri]})


def test_crun_name_img_urls_is_accepted_once() -> None:
    assert validate_input({**GOOD, "img_urls": ["https://e.x/a.png"]}).input_urls == [
        "https://e.x/a.png"
    ]
    with pytest.raises(InvalidInputError, match="once"):
        validate_input({**GOOD, "img_urls": ["https://e.x/a.png"], "input_urls": ["https://e.x/b"]})


def test_terminal_states() -> None:
    assert {s for s in TaskState if s.is_terminal} == {TaskState.SUCCESS, TaskState.FAILED}


def test_task_id_with_path_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="task id"):
        TaskInfo(flux_task_id="../../etc/passwd", state=TaskState.RUNNING)


def test_summary_reads_back_into_the_same_info() -> None:
    info = TaskInfo(
        flux_task_id="task_1",
        state=TaskState.SUCCESS,
        raw_state="succeeded",
        result_urls=["https://cdn.example/a.png"],
        credits=6,
        created_at=1768900378,
        completed_at=1768900406,
        duration_s=28.0,
    )
    assert TaskInfo.model_validate(json.loads(json.dumps(info.summary()))) == info


def test_failed_task_is_classified() -> None:
    retryable = TaskInfo(
        flux_task_id="t", state=TaskState.FAILED, fail_code="501", fail_msg="GPU crashed"
    )
    failure = retryable.failure()
    assert failure is not None
    assert failure.retryable
    refused = TaskInfo(
        flux_task_id="t",
        state=TaskState.FAILED,
        fail_code="400",
        fail_msg="content flagged by moderation",
    )
    failure = refused.failure()
    assert failure is not None
    assert not failure.retryable
    done = TaskInfo(flux_task_id="t", state=TaskState.SUCCESS, result_urls=["https://x/a.png"])
    assert done.failure() is None


def test_input_model_is_frozen_and_typed() -> None:
    model = Flux2MaxInput(prompt="x", seed=3)
    assert model.seed == 3
    with pytest.raises(ValueError, match="frozen"):
        model.seed = 4  # type: ignore[misc]
