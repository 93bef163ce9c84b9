"""Where results are stored: a ``download_to`` value as an Airflow ``ObjectStoragePath``.

``download_to`` may be a plain path (the local disk), a URL (``s3://…``, ``gs://…``,
``file://…``, read with the connection Airflow's object storage finds for it) or an
``ObjectStoragePath``. Operators and triggers both use it, so it sits below both.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import ObjectStoragePath

from flux_provider.api.errors import InvalidInputError


def storage_path(target: str | ObjectStoragePath) -> ObjectStoragePath:
    """A download target as an ``ObjectStoragePath``; a plain path means the local disk."""
    if isinstance(target, ObjectStoragePath):
        return target
    text = str(target).strip()
    if not text:
        raise InvalidInputError("download_to is empty")
    if "://" not in text:
        # Not Path.as_uri(): ObjectStoragePath takes a URL's path literally, so a folder "a b"
        # would become one named "a%20b".
        text = "file://" + str(Path(text).expanduser().resolve())
    return ObjectStoragePath(text)
