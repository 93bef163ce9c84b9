"""The FLUX results a task instance returned, read from Airflow's metadata database.

An image is addressed by its task instance and its position in that task's ``return_value``
XCom, never by a path or URL taken from a request. That XCom can be edited through Airflow's
REST API, so each result comes with what the API cannot write: the task instance's rendered
``download_to``, against which :mod:`~flux_provider.plugins.stored` checks a stored copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flux_provider.api.formatting import bytes_text, credits_text, seconds_text
from flux_provider.api.results import GenerationResult, MalformedResultError

RETURN_VALUE = "return_value"
DOWNLOAD_TO = "download_to"

CODE_FACTS = frozenset({"Flux task", "SHA-256", "Stored at", "Result URL"})
"""The facts that are identifiers or addresses (shown in a monospaced font)."""


@dataclass(frozen=True)
class TaskKey:
    """One task instance: its DAG, run, task and map index (``-1`` when not mapped)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@dataclass(frozen=True)
class Image:
    """One image of a result: its place in the result, the generation that made it, its stored
    copy's record when the task made one, and the API's URL."""

    index: int
    """Its position among the result's images: the page's number and the image route's."""
    generation: GenerationResult
    """The generation that made it (the whole result, or a batch's item), read through its
    type; its stored copies are the untrusted :attr:`stored` records instead."""
    position: int
    """Its position among its generation's images (the ``_<n>`` of its file)."""
    item: int | None = None
    """The batch item it belongs to (``None`` outside a batch)."""
    stored: Mapping[str, Any] | None = None
    """Its stored copy's record, as the XCom holds it: checked by
    :mod:`~flux_provider.plugins.stored` before anything is served from it."""

    @property
    def result_url(self) -> str | None:
        """The API's URL of the image (they expire)."""
        urls = self.generation.result_urls
        return urls[self.position] if self.position < len(urls) else None

    @property
    def location(self) -> str | None:
        """Where the stored copy says it is (``file://``, ``s3://``…), ``None`` without one."""
        value = (self.stored or {}).get("location")
        return value if isinstance(value, str) and value else None


Generation = tuple[int | None, GenerationResult, list[Mapping[str, Any]]]
"""A generation in a result: its batch item's index (``None`` outside a batch), the generation
read through its type, and its stored copies' records as written."""


def _generation(value: Any) -> tuple[GenerationResult, list[Mapping[str, Any]]]:
    if not isinstance(value, Mapping):
        raise MalformedResultError("a generation's result is a mapping")
    stored = value.get("stored")
    records = [r for r in stored if isinstance(r, Mapping)] if isinstance(stored, list) else []
    return GenerationResult.from_xcom({**value, "stored": None}), records


def generations_of(value: Any) -> list[Generation]:
    """The generations a FLUX task's return value holds; a batch's failed items made no image
    and are left out, and so is whatever does not read as a generation."""
    if isinstance(value, Mapping) and isinstance(value.get("items"), list):
        found: list[Generation] = []
        for item in value["items"]:
            if isinstance(item, Mapping) and item.get("state") == "success":
                index = item.get("index")
                with contextlib.suppress(MalformedResultError):
                    generation, records = _generation(item)
                    found.append((index if isinstance(index, int) else None, generation, records))
        return found
    try:
        generation, records = _generation(value)
    except MalformedResultError:
        return []
    return [(None, generation, records)]


@dataclass(frozen=True)
class FluxResult:
    """A FLUX task's return value, the task instance that returned it, and that task
    instance's rendered ``download_to`` (``None`` when Airflow holds none)."""

    key: TaskKey
    value: Mapping[str, Any]
    download_to: Any = None

    @property
    def is_batch(self) -> bool:
        """Whether the result is a batch's (``{"items": [...]}``)."""
        return isinstance(self.value.get("items"), list)

    @property
    def images(self) -> list[Image]:
        """Every image, generation by generation (a batch's in item order), each in the order
        of its generation's result URLs."""
        images: list[Image] = []
        for item, generation, records in generations_of(self.value):
            count = max(len(generation.result_urls), len(records))
            images.extend(
                Image(
                    len(images) + position,
                    generation,
                    position,
                    item,
                    records[position] if position < len(records) else None,
                )
                for position in range(count)
            )
        return images

    def facts(self, image: Image) -> list[tuple[str, str | None]]:
        """What made ``image`` and what it is, as (label, text) pairs; ``None`` when unknown."""
        generation = image.generation
        asked = generation.request or {}
        stored = image.stored or {}
        facts: list[tuple[str, str | None]] = [("Flux task", generation.flux_task_id)]
        if image.item is not None:
            facts.append(("Batch item", str(image.item)))
        return [
            *facts,
            ("Prompt", _text(asked.get("prompt"))),
            ("Seed", _text(asked.get("seed"))),
            ("Aspect ratio", _text(asked.get("aspect_ratio"))),
            ("Resolution", _text(asked.get("resolution"))),
            ("Credits", _number(generation.task.credits, credits_text)),
            ("Duration", _number(generation.task.duration_s, seconds_text)),
            ("Size", _number(stored.get("bytes"), lambda size: bytes_text(int(size)))),
            ("SHA-256", _text(stored.get("sha256"))),
            ("Stored at", image.location),
            ("Result URL", image.result_url),
        ]


def is_flux_result(value: Any) -> bool:
    """Whether an XCom value is a FLUX operator's, sensor's or batch's result."""
    return isinstance(value, Mapping) and (
        isinstance(value.get("items"), list) or bool(generations_of(value))
    )


def _of_task_instance(model: Any, key: TaskKey) -> list[Any]:
    """The conditions selecting ``key``'s rows of a table keyed by task instance."""
    return [
        model.dag_id == key.dag_id,
        model.run_id == key.run_id,
        model.task_id == key.task_id,
        model.map_index == key.map_index,
    ]


def task_result(session: Session, key: TaskKey) -> FluxResult | None:
    """The FLUX result of one task instance, ``None`` if it returned none (yet)."""
    from airflow.models.xcom import XComModel

    query = select(XComModel.value).where(
        *_of_task_instance(XComModel, key), XComModel.key == RETURN_VALUE
    )
    row = session.execute(query).first()
    if row is None:
        return None
    value = XComModel.deserialize_value(row)
    if not is_flux_result(value):
        return None
    return FluxResult(key, value, _rendered_download_to(session, key))


def run_results(session: Session, dag_id: str, run_id: str) -> list[FluxResult]:
    """Every FLUX result of a DAG run, by task id and then map index."""
    from airflow.models.xcom import XComModel

    query = (
        select(XComModel.task_id, XComModel.map_index, XComModel.value)
        .where(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            XComModel.key == RETURN_VALUE,
        )
        .order_by(XComModel.task_id, XComModel.map_index)
    )
    folders = _run_download_to(session, dag_id, run_id)
    found = []
    for row in session.execute(query):
        value = XComModel.deserialize_value(row)
        if is_flux_result(value):
            key = TaskKey(dag_id, run_id, row.task_id, row.map_index)
            found.append(FluxResult(key, value, folders.get((row.task_id, row.map_index))))
    return found


def _rendered_download_to(session: Session, key: TaskKey) -> Any:
    """The rendered ``download_to`` of one task instance, as Airflow stored it."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered

    query = select(Rendered.rendered_fields).where(*_of_task_instance(Rendered, key))
    fields = session.execute(query).scalar()
    return fields.get(DOWNLOAD_TO) if isinstance(fields, Mapping) else None


def _run_download_to(session: Session, dag_id: str, run_id: str) -> dict[tuple[str, int], Any]:
    """The rendered ``download_to`` of each task instance of a run, by task id and map index."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered

    query = select(Rendered.task_id, Rendered.map_index, Rendered.rendered_fields).where(
        Rendered.dag_id == dag_id, Rendered.run_id == run_id
    )
    return {
        (row.task_id, row.map_index): row.rendered_fields.get(DOWNLOAD_TO)
        for row in session.execute(query)
        if isinstance(row.rendered_fields, Mapping)
    }


@dataclass(frozen=True)
class TaskFacts:
    """What the page says about a task instance without a FLUX result."""

    state: str | None
    """Its state (``None`` when it has none, or does not exist)."""
    operator: str | None
    """Its operator as the UI names it (``@task.flux_image``, ``ApprovalOperator``…)."""

    @property
    def makes_flux_images(self) -> bool:
        """Whether its operator is one of this provider's (or unknown: then it may be)."""
        name = (self.operator or "").lstrip("_")
        return not name or name.startswith(("Flux", "@task.flux"))


def task_facts(session: Session, key: TaskKey) -> TaskFacts:
    """The state and the operator of one task instance."""
    from airflow.models.taskinstance import TaskInstance

    query = select(
        TaskInstance.state, TaskInstance.operator, TaskInstance.custom_operator_name
    ).where(*_of_task_instance(TaskInstance, key))
    row = session.execute(query).first()
    if row is None:
        return TaskFacts(None, None)
    state = None if row.state is None else str(getattr(row.state, "value", row.state))
    return TaskFacts(state, row.custom_operator_name or row.operator)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _number(value: Any, show: Callable[[float], str]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return show(value)
