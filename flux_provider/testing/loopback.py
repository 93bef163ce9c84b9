"""Loopback checks: the fake only serves and calls back on this machine unless told otherwise."""

from __future__ import annotations

from urllib.parse import urlsplit

from flux_provider.config import is_loopback_host

__all__ = ["is_loopback_host", "is_loopback_http_url"]


def is_loopback_http_url(url: str) -> bool:
    """Whether ``url`` is a plain ``http://`` URL pointing at a loopback host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on an invalid port
    except ValueError:
        return False
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "")
