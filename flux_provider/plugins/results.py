"""The FLUX results a task instance returned, read from Airflow's metadata database.

An image is addressed by its task instance and its position in that task's ``return_value``
XCom, never by a path or URL taken from a request. That XCom can be edited through Airflow's
REST API, so each result comes with what the API cannot write: the task instance's rendered
``download_to``, against which :mod:`~flux_provider.plugins.stored` checks a stored copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flux_provider.api.formatting import bytes_text, credits_text, seconds_text

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
    """One image of a result: its stored copy when the task made one, else the API's URL."""

    index: int
    result_url: str | None
    stored: Mapping[str, Any] | None

    @property
    def location(self) -> str | None:
        """Where the stored copy is (``file://``, ``s3://``…), ``None`` without one."""
        value = (self.stored or {}).get("location")
        return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class FluxResult:
    """A FLUX task's return value, the task instance that returned it, and that task
    instance's rendered ``download_to`` (``None`` when Airflow holds none)."""

    key: TaskKey
    value: Mapping[str, Any]
    download_to: Any = None

    @property
    def request(self) -> Mapping[str, Any]:
        """What the task asked for (``prompt``, ``seed``…), empty when it did not record it."""
        asked = self.value.get("input")
        return asked if isinstance(asked, Mapping) else {}

    def facts(self, image: Image) -> list[tuple[str, str | None]]:
        """What made ``image`` and what it is, as (label, text) pairs; ``None`` when unknown."""
        asked = self.request
        stored = image.stored or {}
        return [
            ("Flux task", _text(self.value.get("flux_task_id"))),
            ("Prompt", _text(asked.get("prompt"))),
            ("Seed", _text(asked.get("seed"))),
            ("Aspect ratio", _text(asked.get("aspect_ratio"))),
            ("Resolution", _text(asked.get("resolution"))),
            ("Credits", _number(self.value.get("credits"), credits_text)),
            ("Duration", _number(self.value.get("duration_s"), seconds_text)),
            ("Size", _number(stored.get("bytes"), lambda size: bytes_text(int(size)))),
            ("SHA-256", _text(stored.get("sha256"))),
            ("Stored at", image.location),
            ("Result URL", image.result_url),
        ]

    @property
    def images(self) -> list[Image]:
        """Every image, in the order of the API's result URLs."""
        urls = [url for url in _list(self.value.get("result_urls")) if isinstance(url, str)]
        stored = [item for item in _list(self.value.get("stored")) if isinstance(item, Mapping)]
        count = max(len(urls), len(stored))
        return [
            Image(
                index=index,
                result_url=urls[index] if index < len(urls) else None,
                stored=stored[index] if index < len(stored) else None,
            )
            for index in range(count)
        ]


def is_flux_result(value: Any) -> bool:
    """Whether an XCom value has the shape of a FLUX operator's or sensor's result."""
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("flux_task_id"), str)
        and isinstance(value.get("result_urls"), list)
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


def task_state(session: Session, key: TaskKey) -> str | None:
    """The task instance's state (``None`` when it has none, or does not exist)."""
    from airflow.models.taskinstance import TaskInstance

    query = select(TaskInstance.state).where(*_of_task_instance(TaskInstance, key))
    state = session.execute(query).scalar()
    return None if state is None else str(getattr(state, "value", state))


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _number(value: Any, show: Callable[[float], str]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return show(value)
