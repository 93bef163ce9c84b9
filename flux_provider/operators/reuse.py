"""Reuse of identical generations (opt-in, ``reuse=True``): what is made once is not paid again.

A generation's key is the SHA-256 of the model and its canonical input (every field, the bytes
of stored reference images included, as they are sent). When a task stores its images, it
writes a manifest named by that key in ``<download_to>/.flux-reuse/``: the key, the task that
made it and its result (each image's location, size and SHA-256). A later task with the same key
and the same ``download_to`` finds the manifest, checks every image is still there, whole and
unchanged, and returns that result (``reused: true``) without calling the API. Without a seed
the service picks one, so the same prompt would give another image each time: reuse returns
the first one made.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from airflow.sdk import ObjectStoragePath

from flux_provider.api.batch.journal import read_json, write_json
from flux_provider.api.models import Flux2MaxInput
from flux_provider.api.results import GenerationResult, MalformedResultError

REUSE_FOLDER = ".flux-reuse"
"""The manifests' folder in ``download_to``."""
_HASH_CHUNK = 1 << 20


def generation_key(model: str, flux_input: Flux2MaxInput) -> str:
    """The key of a generation: the SHA-256 of its model and canonical input."""
    canonical = json.dumps(
        {"model": model, "input": flux_input.parameters()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _manifest(folder: ObjectStoragePath, key: str) -> ObjectStoragePath:
    return folder / REUSE_FOLDER / f"{key}.json"


def _unchanged(folder: ObjectStoragePath, location: str, size: int, sha256: str) -> bool:
    """Whether ``location`` is in ``folder`` and still holds exactly the bytes recorded."""
    if not location.startswith(str(folder).rstrip("/") + "/"):
        return False
    path = ObjectStoragePath(location)
    digest = hashlib.sha256()
    read = 0
    try:
        with path.open("rb") as source:  # type: ignore[no-untyped-call]
            while chunk := source.read(_HASH_CHUNK):
                read += len(chunk)
                if read > size:
                    return False
                digest.update(chunk)
    except OSError:
        return False
    return read == size and digest.hexdigest() == sha256


def find_reusable(folder: ObjectStoragePath, key: str) -> tuple[GenerationResult, str] | None:
    """The stored result made for ``key`` and why it can be reused, or ``None``: the manifest
    must name the key, and each of its images must still be whole in ``folder``."""
    try:
        manifest = read_json(_manifest(folder, key))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return None
    try:
        result = GenerationResult.from_xcom(manifest.get("result"))
    except MalformedResultError:
        return None
    if not result.stored or not all(
        _unchanged(folder, image.location, image.bytes, image.sha256) for image in result.stored
    ):
        return None
    made_by = manifest.get("made_by") or {}
    return (
        result,
        f"made by {made_by.get('dag_id')}.{made_by.get('task_id')} ({made_by.get('run_id')})",
    )


def write_manifest(
    folder: ObjectStoragePath, key: str, result: GenerationResult, made_by: dict[str, Any]
) -> None:
    """Record that ``result`` was made for ``key`` (once its images are stored)."""
    (folder / REUSE_FOLDER).mkdir(parents=True, exist_ok=True)
    value = {"key": key, "made_by": made_by, "result": result.to_xcom()}
    write_json(_manifest(folder, key), value)
