"""Where the plugin's pages and images live under the API server, for links to them."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from flux_provider.plugins.results import TaskKey

URL_PREFIX = "/flux"
"""Where the API server mounts the plugin's app."""


def image_path(key: TaskKey, index: int, *, root: str = URL_PREFIX) -> str:
    """The path of image ``index`` of the task instance ``key``'s result, under ``root``.

    ``root=""`` gives a path relative to the API server's base URL (``flux/images/...``), as
    the UI resolves relative links in markdown such as a human-review form's body.
    """
    parts = [key.dag_id, key.run_id, key.task_id, str(key.map_index), str(index)]
    prefix = root.rstrip("/") + "/images/" if root else URL_PREFIX.lstrip("/") + "/images/"
    return prefix + "/".join(quote(part, safe="") for part in parts)
