"""Loopback checks and ports: the fake only serves and calls back on this machine by default."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from flux_provider.api.config import is_loopback_host

__all__ = ["free_loopback_ports", "is_loopback_host", "is_loopback_http_url"]


def is_loopback_http_url(url: str) -> bool:
    """Whether ``url`` is a plain ``http://`` URL pointing at a loopback host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on an invalid port
    except ValueError:
        return False
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "")


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
