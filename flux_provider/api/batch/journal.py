"""A batch's journal: its inputs and one record per item, kept beside its images.

The journal lives in the batch's own storage (``<download_to>/.flux-batch/<key>/``), not in
Airflow's database: it survives an Airflow retry (which clears XCom), a dead worker, a restarted
or adopted triggerer and a database restart, and it works the same on every Airflow version.
Local files are written to a temporary name, flushed to disk and renamed over the old one, so a
record is either the old one or the new one, never half of each; object stores write each
object whole.

Layout::

    inputs.json         the validated inputs, written by the worker before it defers
    owner.json          the token of the trigger that runs the batch now
    items/<index>.json  one ItemRecord per item that has been submitted or has ended
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Any, Protocol

from flux_provider.api.batch.items import ItemRecord
from flux_provider.api.downloads import local_path
from flux_provider.api.models import Flux2MaxInput

JOURNAL_FOLDER = ".flux-batch"
"""The journals' folder in ``download_to`` (a dot folder: listings of images skip it)."""


class JournalFolder(Protocol):
    """The path operations a journal needs (``ObjectStoragePath`` and ``pathlib.Path`` have
    them)."""

    def __truediv__(self, name: str) -> JournalFolder: ...

    def open(self, mode: str) -> IO[Any]: ...

    def exists(self) -> bool: ...

    def iterdir(self) -> Iterator[JournalFolder]: ...

    def unlink(self, missing_ok: bool = ...) -> None: ...

    def mkdir(self, mode: int = ..., parents: bool = ..., exist_ok: bool = ...) -> None: ...

    def rmdir(self) -> None: ...

    @property
    def name(self) -> str: ...


def write_json(target: JournalFolder, value: Any) -> None:
    """Write ``value`` as JSON to ``target``: whole or not at all, and on disk once returned."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    path = local_path(target)
    if path is None:
        with target.open("w") as sink:
            sink.write(text)
        return
    partial = f"{path}.{uuid.uuid4().hex}.part"
    try:
        with open(partial, "w", encoding="utf-8") as sink:
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def read_json(target: JournalFolder) -> Any:
    """The JSON value in ``target``; ``None`` if it does not exist."""
    if not target.exists():
        return None
    with target.open("r") as source:
        return json.loads(source.read())


class BatchJournal:
    """The journal of one batch task instance, under ``folder/.flux-batch/<key>``.

    :param folder: the batch's ``download_to``.
    :param key: names the task instance (see :func:`journal_key`); safe as one path segment.
    """

    def __init__(self, folder: JournalFolder, key: str) -> None:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"a journal key is one plain path segment, got {key!r}")
        self.root = folder / JOURNAL_FOLDER / key
        self._items = self.root / "items"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def write_inputs(self, inputs: Sequence[Flux2MaxInput]) -> None:
        """Record the validated inputs (the trigger reads them, the worker writes them)."""
        self._items.mkdir(parents=True, exist_ok=True)
        write_json(self.root / "inputs.json", [item.parameters() for item in inputs])

    def read_inputs(self) -> list[Flux2MaxInput]:
        """The inputs the worker recorded (validated when written, so read as they are)."""
        value = read_json(self.root / "inputs.json")
        if not isinstance(value, list):
            raise FileNotFoundError(f"{self.root} holds no inputs: the batch was not started")
        return [Flux2MaxInput.model_validate(item) for item in value]

    def save(self, record: ItemRecord) -> None:
        """Write one item's record (replacing the previous one)."""
        self._items.mkdir(parents=True, exist_ok=True)
        write_json(self._items / f"{record.index}.json", record.to_json())

    def records(self) -> dict[int, ItemRecord]:
        """Every item's record, by index (items never submitted have none)."""
        if not self._items.exists():
            return {}
        found: dict[int, ItemRecord] = {}
        for entry in self._items.iterdir():
            stem, dot, suffix = entry.name.partition(".")
            if dot and suffix == "json" and stem.isdigit():
                value = read_json(entry)
                if isinstance(value, dict):
                    found[int(stem)] = ItemRecord.from_json(value)
        return found

    def claim(self) -> str:
        """Make the caller the batch's runner; returns its token (see :meth:`runner`)."""
        token = uuid.uuid4().hex
        self._items.mkdir(parents=True, exist_ok=True)
        write_json(self.root / "owner.json", {"token": token})
        return token

    def runner(self) -> str | None:
        """The token of the latest claim: a runner that finds another one stops submitting."""
        value = read_json(self.root / "owner.json")
        token = value.get("token") if isinstance(value, dict) else None
        return token if isinstance(token, str) else None

    def clear(self) -> None:
        """Forget the batch: its records, inputs and claim (the images stay)."""
        if self._items.exists():
            for entry in list(self._items.iterdir()):
                entry.unlink(missing_ok=True)
        for name in ("inputs.json", "owner.json"):
            (self.root / name).unlink(missing_ok=True)
        for folder in (self._items, self.root):
            with contextlib.suppress(OSError):
                folder.rmdir()


def journal_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """A path segment naming one task instance: readable, and unique for any run id."""
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{task_id}\0{map_index}".encode()).hexdigest()
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{dag_id}.{task_id}")[:80]
    suffix = "" if map_index < 0 else f".{map_index}"
    return f"{safe.strip('-.') or 'batch'}{suffix}.{digest[:16]}"
