"""Where the plugin's pages and images live under the API server, for links to them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

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


_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")


def web_origin(url: str) -> str | None:
    """``https://host[:port]`` of an http(s) URL whose host is a plain DNS name or IPv4
    address, else ``None``: an origin that can stand as it is in a Content-Security-Policy."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(host):
        return None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
