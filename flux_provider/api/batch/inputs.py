"""A batch's items from ``prompts`` or ``inputs`` and shared defaults, each validated.

Every item is checked before anything is sent: one bad item fails the whole batch at once,
naming its index and field, and nothing is charged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from flux_provider.api.errors import InvalidInputError
from flux_provider.api.formatting import count_text
from flux_provider.api.models import Flux2MaxInput, describe_validation_error

SHOWN_PROBLEMS = 5
"""Bad items named in the error (the count says how many more there are)."""


def _raw_items(
    prompts: Sequence[Any] | None, inputs: Sequence[Any] | None
) -> tuple[str, list[Any]]:
    if (prompts is None) == (inputs is None):
        raise InvalidInputError("give the batch either prompts or inputs (exactly one of them)")
    name, given = ("prompts", prompts) if prompts is not None else ("inputs", inputs)
    if isinstance(given, (str, bytes, Mapping)) or not isinstance(given, Sequence):
        raise InvalidInputError(f"{name} must be a list, got {type(given).__name__}")
    if not given:
        raise InvalidInputError(f"{name} is empty: a batch needs at least one item")
    return name, list(given)


References = Callable[[Any, str], Any]
"""Reads an item's stored reference images (``input_urls`` and the field's name) into what the
API takes; the operators pass one that reads Airflow's object storage."""


def _item(
    name: str,
    index: int,
    raw: Any,
    defaults: Mapping[str, Any],
    references: References | None,
) -> Flux2MaxInput:
    where = f"{name}[{index}]"
    if name == "prompts":
        if not isinstance(raw, str):
            raise InvalidInputError(f"{where} must be a prompt (text), got {type(raw).__name__}")
        raw = {"prompt": raw}
    elif not isinstance(raw, Mapping):
        raise InvalidInputError(
            f"{where} must be a mapping of input fields, got {type(raw).__name__}"
        )
    data = {**defaults, **{key: value for key, value in raw.items() if value is not None}}
    if references is not None:
        for key in ("input_urls", "img_urls"):
            if key in data:
                data[key] = references(data[key], f"{where}.{key}")
    try:
        return Flux2MaxInput.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(describe_validation_error(exc, prefix=f"{where}.")) from None


def batch_inputs(
    prompts: Sequence[Any] | None,
    inputs: Sequence[Any] | None,
    defaults: Mapping[str, Any] | None = None,
    references: References | None = None,
) -> list[Flux2MaxInput]:
    """Each item as a validated input: an item's own fields win over the shared ``defaults``;
    ``references``, when given, reads the items' stored reference images.

    Raises :class:`~flux_provider.api.errors.InvalidInputError` naming the first bad items
    (``inputs[3].seed: ...``) and how many are bad in all.
    """
    name, raw_items = _raw_items(prompts, inputs)
    shared = {key: value for key, value in (defaults or {}).items() if value is not None}
    checked: list[Flux2MaxInput] = []
    problems: list[str] = []
    for index, raw in enumerate(raw_items):
        try:
            checked.append(_item(name, index, raw, shared, references))
        except InvalidInputError as exc:
            problems.append(exc.message)
    if problems:
        more = len(problems) - SHOWN_PROBLEMS
        tail = f"; and {count_text(more, 'more bad item')}" if more > 0 else ""
        raise InvalidInputError(
            f"{count_text(len(problems), 'item')} of {len(raw_items):,} invalid, nothing "
            f"submitted: " + "; ".join(problems[:SHOWN_PROBLEMS]) + tail
        )
    return checked
