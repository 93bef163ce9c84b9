"""What a batch knows about each of its items: the record kept in the journal, and the counts.

Every item of a batch has an :class:`ItemRecord`, written to the batch's journal whenever its
state changes, so that whoever runs the batch next (a restarted triggerer, the next Airflow try)
knows what the API already accepted and never submits it again. :func:`plan_try` decides, from
the records alone, what a try must poll again and what it must submit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, Literal

from flux_provider.api.formatting import credits_text
from flux_provider.api.models import TaskInfo


class ItemState(str, Enum):
    """Where an item is: ``pending`` → ``submitted`` → ``succeeded`` | ``failed``."""

    PENDING = "pending"
    """Not submitted yet (in this try)."""
    SUBMITTED = "submitted"
    """Accepted by the API: generating, or its end not stored yet."""
    SUCCEEDED = "succeeded"
    """Generated, and its images stored."""
    FAILED = "failed"
    """Ended without stored images; ``on_retry`` says what the next try does."""


OnRetry = Literal["reattach", "resubmit", "never"]
"""What the next Airflow try does with a failed item: poll (and store) the same API task again,
submit a new one (the failure was the generation's, or its result expired), or nothing (no
retry can help: moderation, validation)."""


@dataclass
class ItemRecord:
    """One item's state in the journal (JSON: :meth:`to_json` / :meth:`from_json`)."""

    index: int
    state: ItemState = ItemState.PENDING
    flux_task_id: str | None = None
    """The API task of the latest submission."""
    submissions: int = 0
    """Creates the API accepted for this item, over every try (each one was paid)."""
    tried: int = 0
    """The Airflow try that last changed this record."""
    on_retry: OnRetry = "resubmit"
    error: str | None = None
    """Why the item failed (the task log's words, never the key)."""
    task: dict[str, Any] | None = None
    """The task's final :meth:`~flux_provider.api.models.TaskInfo.summary`, once ended."""
    stored: list[dict[str, Any]] | None = None
    """The stored copies (:meth:`~flux_provider.api.downloads.StoredImage.as_dict`)."""
    ended_seen_at: float | None = None
    """Epoch seconds when the end of the generation was seen."""
    stored_at: float | None = None
    """Epoch seconds when its images were stored."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What a later version recorded that this one does not know (kept on rewrite)."""

    def to_json(self) -> dict[str, Any]:
        """The record as written to the journal."""
        value = asdict(self)
        value["state"] = self.state.value
        extra = value.pop("extra")
        return {**extra, **value}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ItemRecord:
        """A record read back; unknown keys are kept in :attr:`extra`."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {name: value[name] for name in known if name in value}
        values["state"] = ItemState(values.get("state", ItemState.PENDING.value))
        return cls(**values, extra={k: v for k, v in value.items() if k not in known})

    @property
    def info(self) -> TaskInfo | None:
        """The ended task, when known."""
        return TaskInfo.model_validate(self.task) if self.task is not None else None

    def submitted(self, flux_task_id: str, try_number: int) -> None:
        """The API accepted a create for this item."""
        self.state = ItemState.SUBMITTED
        self.flux_task_id = flux_task_id
        self.submissions += 1
        self.tried = try_number
        self.error = None
        self.task = self.stored = None
        self.ended_seen_at = self.stored_at = None

    def failed(self, error: str, on_retry: OnRetry, try_number: int) -> None:
        """The item ended without stored images."""
        self.state = ItemState.FAILED
        self.error = error
        self.on_retry = on_retry
        self.tried = try_number

    def succeeded(self, stored: list[dict[str, Any]], at: float) -> None:
        """Its images are stored."""
        self.state = ItemState.SUCCEEDED
        self.stored = stored
        self.stored_at = at
        self.error = None


@dataclass(frozen=True)
class TryPlan:
    """What one Airflow try of a batch does: poll these items again, submit those."""

    reattach: tuple[int, ...]
    submit: tuple[int, ...]


def plan_try(records: Mapping[int, ItemRecord], count: int, try_number: int) -> TryPlan:
    """The plan of try ``try_number`` for a batch of ``count`` items.

    Submitted items are polled again (never submitted twice); items that failed in an earlier
    try are polled again or submitted anew as their ``on_retry`` says; items that failed in
    this try (a restarted triggerer) and hopeless failures are left as they are.
    """
    reattach: list[int] = []
    submit: list[int] = []
    for index in range(count):
        record = records.get(index)
        if record is None or record.state is ItemState.PENDING:
            submit.append(index)
        elif record.state is ItemState.SUBMITTED:
            reattach.append(index)
        elif record.state is ItemState.FAILED and record.tried < try_number:
            if record.on_retry == "reattach" and record.flux_task_id is not None:
                reattach.append(index)
            elif record.on_retry != "never":
                submit.append(index)
    return TryPlan(tuple(reattach), tuple(submit))


@dataclass(frozen=True)
class BatchCounts:
    """How far a batch is: for the progress line and the return value."""

    total: int
    stored: int
    generating: int
    failed: int
    credits: float

    @classmethod
    def of(cls, records: Iterable[ItemRecord], total: int) -> BatchCounts:
        """Count the records (an item without a record is pending)."""
        stored = generating = failed = 0
        credits = 0.0
        for record in records:
            stored += record.state is ItemState.SUCCEEDED
            generating += record.state is ItemState.SUBMITTED
            failed += record.state is ItemState.FAILED
            cost = (record.task or {}).get("credits")
            credits += cost if isinstance(cost, (int, float)) else 0.0
        return cls(total, stored, generating, failed, credits)

    def progress_line(self) -> str:
        """``312 of 1,000 stored, 16 generating, 2 failed, 1,872 credits``."""
        return (
            f"{self.stored:,} of {self.total:,} stored, {self.generating:,} generating, "
            f"{self.failed:,} failed, {credits_text(self.credits)} credits"
        )
