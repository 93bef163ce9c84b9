"""A batch's items: validated from ``prompts`` or ``inputs``; their records and each try's plan."""

from __future__ import annotations

from typing import Any

import pytest

from flux_provider.api.batch import BatchCounts, ItemRecord, ItemState, batch_inputs, plan_try
from flux_provider.api.errors import InvalidInputError


def test_prompts_take_the_shared_defaults() -> None:
    items = batch_inputs(["a fox", "a hen"], None, {"aspect_ratio": "16:9", "seed": 3})
    assert [item.parameters() for item in items] == [
        {"prompt": "a fox", "aspect_ratio": "16:9", "seed": 3},
        {"prompt": "a hen", "aspect_ratio": "16:9", "seed": 3},
    ]


def test_an_items_own_fields_win_over_the_defaults_and_extras_pass_through() -> None:
    inputs = [{"prompt": "a fox", "seed": 9, "style_raw": True}, {"prompt": "a hen"}]
    items = batch_inputs(None, inputs, {"seed": 3, "resolution": "2K"})
    assert items[0].parameters() == {
        "prompt": "a fox",
        "seed": 9,
        "resolution": "2K",
        "style_raw": True,
    }
    assert items[1].seed == 3


@pytest.mark.parametrize(
    ("prompts", "inputs", "message"),
    [
        (None, None, "exactly one of them"),
        (["a"], [{"prompt": "a"}], "exactly one of them"),
        ([], None, "prompts is empty"),
        ("a fox", None, "prompts must be a list, got str"),
        (None, {"prompt": "a"}, "inputs must be a list, got dict"),
        (["a", 7], None, r"prompts\[1\] must be a prompt \(text\), got int"),
        (None, [{"prompt": "a"}, "b"], r"inputs\[1\] must be a mapping of input fields"),
        (None, [{"prompt": "a", "seed": -1}], r"inputs\[0\]\.seed: "),
        (["a", "  "], None, r"prompts\[1\]\.prompt: prompt must not be blank"),
    ],
)
def test_a_bad_batch_is_refused_naming_the_item_and_field(
    prompts: Any, inputs: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        batch_inputs(prompts, inputs)


def test_many_bad_items_are_counted_and_the_first_named() -> None:
    with pytest.raises(InvalidInputError) as info:
        batch_inputs([""] * 8 + ["fine"], None)
    message = str(info.value)
    assert message.startswith("8 items of 9 invalid, nothing submitted: prompts[0].prompt")
    assert "prompts[4]" in message
    assert "prompts[5]" not in message
    assert message.endswith("and 3 more bad items")


def test_a_record_reads_back_and_keeps_what_it_does_not_know() -> None:
    record = ItemRecord(4)
    record.submitted("task_4", 2)
    value = {**record.to_json(), "written_by": "a later version"}
    again = ItemRecord.from_json(value)
    assert again == ItemRecord.from_json(again.to_json())
    assert (again.state, again.flux_task_id, again.submissions, again.tried) == (
        ItemState.SUBMITTED,
        "task_4",
        1,
        2,
    )
    assert again.to_json()["written_by"] == "a later version"


def _record(index: int, state: ItemState, tried: int = 1, on_retry: str = "resubmit") -> ItemRecord:
    record = ItemRecord(index, flux_task_id=f"task_{index}", tried=tried)
    record.state = state
    record.on_retry = on_retry  # type: ignore[assignment]
    return record


def test_a_try_plans_from_the_records_alone() -> None:
    records = {
        0: _record(0, ItemState.SUCCEEDED),
        1: _record(1, ItemState.SUBMITTED),
        2: _record(2, ItemState.FAILED, on_retry="never"),
        3: _record(3, ItemState.FAILED, on_retry="resubmit"),
        4: _record(4, ItemState.FAILED, on_retry="reattach"),
        5: _record(5, ItemState.FAILED, tried=2),
        6: _record(6, ItemState.PENDING),
    }
    plan = plan_try(records, 8, try_number=2)
    assert plan.reattach == (1, 4)
    assert plan.submit == (3, 6, 7)


def test_the_progress_line_reads_as_the_log_shows_it() -> None:
    records = [_record(i, ItemState.SUCCEEDED) for i in range(312)]
    records += [_record(i, ItemState.SUBMITTED) for i in range(16)]
    records += [_record(i, ItemState.FAILED) for i in range(2)]
    for record in records[:312]:
        record.task = {"credits": 6.0}
    counts = BatchCounts.of(records, 1000)
    assert counts.progress_line() == "312 of 1,000 stored, 16 generating, 2 failed, 1,872 credits"
