"""A batch's journal on local disk and on an object store (an in-memory stand-in)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from flux_provider.api.batch import BatchJournal, ItemRecord, ItemState, batch_inputs, journal_key
from flux_provider.api.batch.journal import JOURNAL_FOLDER
from flux_provider.api.downloads import local_path


class MemoryStore:
    """An object store: whole objects, no rename (like ``s3://`` through fsspec)."""

    protocol = "memory"

    def __init__(self, objects: dict[str, bytes], key: str = "") -> None:
        self.objects = objects
        self.key = key

    def __truediv__(self, name: str) -> MemoryStore:
        return MemoryStore(self.objects, f"{self.key}/{name}".lstrip("/"))

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def open(self, mode: str = "r") -> IO[Any]:
        if "w" in mode:
            store = self

            class Sink(io.StringIO):
                def close(self) -> None:
                    store.objects[store.key] = self.getvalue().encode()
                    super().close()

            return Sink()
        return io.StringIO(self.objects[self.key].decode())

    def exists(self) -> bool:
        return self.key in self.objects or any(k.startswith(self.key + "/") for k in self.objects)

    def iterdir(self) -> Iterator[MemoryStore]:
        children = {
            k[len(self.key) + 1 :].split("/")[0]
            for k in self.objects
            if k.startswith(self.key + "/")
        }
        return iter([self / child for child in sorted(children)])

    def unlink(self, missing_ok: bool = False) -> None:
        self.objects.pop(self.key, None)

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        return None

    def rmdir(self) -> None:
        return None


INPUTS = batch_inputs(["a fox", "a hen"], None, {"seed": 3})


def _exercise(journal: BatchJournal) -> None:
    journal.write_inputs(INPUTS)
    assert journal.read_inputs() == INPUTS
    first = ItemRecord(0)
    first.submitted("task_a", 1)
    journal.save(first)
    first.succeeded([{"location": "file:///x.png"}], 5.0)
    journal.save(first)
    second = ItemRecord(1)
    second.failed("moderated", "never", 1)
    journal.save(second)
    records = journal.records()
    assert records[0].state is ItemState.SUCCEEDED
    assert records[0].stored == [{"location": "file:///x.png"}]
    assert records[1].on_retry == "never"
    token = journal.claim()
    assert journal.runner() == token
    later = journal.claim()
    assert journal.runner() == later != token
    journal.clear()
    assert journal.records() == {}
    assert journal.runner() is None


def test_on_local_disk(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path, journal_key("dag", "run", "batch", -1))
    _exercise(journal)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_local_writes_leave_no_partial_file(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path, "k")
    journal.save(ItemRecord(3))
    files = sorted(p.name for p in (tmp_path / JOURNAL_FOLDER / "k" / "items").iterdir())
    assert files == ["3.json"]
    assert (
        json.loads((tmp_path / JOURNAL_FOLDER / "k" / "items" / "3.json").read_text())["index"] == 3
    )


def test_on_an_object_store() -> None:
    objects: dict[str, bytes] = {}
    journal = BatchJournal(MemoryStore(objects, "bucket/out"), "k")
    journal.write_inputs(INPUTS)
    assert "bucket/out/.flux-batch/k/inputs.json" in objects
    _exercise(journal)


def test_a_batch_never_started_has_no_inputs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not started"):
        BatchJournal(tmp_path, "k").read_inputs()


@pytest.mark.parametrize("key", ["", "a/b", ".hidden"])
def test_a_key_is_one_plain_segment(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="one plain path segment"):
        BatchJournal(tmp_path, key)


def test_keys_name_the_task_instance_and_differ_for_each() -> None:
    keys = {
        journal_key("catalogue", "manual__2026-12-04T10:00:00+00:00", "generate", -1),
        journal_key("catalogue", "manual__2026-12-04T10:00:00+00:00", "generate", 0),
        journal_key("catalogue", "manual__2026-12-05T10:00:00+00:00", "generate", -1),
        journal_key("catalogue", "manual__2026-12-04T10:00:00+00:00", "other", -1),
    }
    assert len(keys) == 4
    for key in keys:
        assert "/" not in key
        assert ":" not in key
        assert key.startswith("catalogue.generate.") or key.startswith("catalogue.other.")


def test_local_paths_are_told_from_object_stores(tmp_path: Path) -> None:
    assert local_path(tmp_path) == str(tmp_path)
    assert local_path(MemoryStore({})) is None
