"""Where and how to reach the API: defaults, base-URL rules and the client configuration.

No Airflow imports: :class:`ClientConfig` is built from an Airflow connection by
the hook, or directly by code that uses the client alone.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from flux_provider import DISTRIBUTION, __version__
from flux_provider.api.decoding import ACCEPT_ENCODING
from flux_provider.api.retry import RetryPolicy

DEFAULT_BASE_URL = "https://api.crun.ai"
DEFAULT_CREATE_PATH = "/api/v1/client/job/CreateTask"
DEFAULT_INFO_PATH = "/api/v1/client/job/TaskInfo"
DEFAULT_BALANCE_PATH = "/api/v1/client/account/balance"
DEFAULT_ESTIMATE_PATH = "/api/v1/client/job/estimate-credits"
DEFAULT_AUTH_HEADER = "x-api-key"
DEFAULT_TIMEOUT = 30.0
"""Seconds a request may take in all: connecting, sending and reading the whole answer."""
DEFAULT_WAIT_TIMEOUT = 15 * 60.0
KEEPALIVE_EXPIRY = 30.0
"""Seconds an idle pooled connection stays open: above the 5 s poll cap (httpx's default of 5 s
made every poll at the cap reconnect), below common server idle timeouts (60-75 s)."""
MAX_RESPONSE_BYTES = 1 << 20
"""API answers are a few hundred bytes; anything past 1 MiB (on the wire or once decoded) is
refused."""
MAX_CONNECTIONS = 64
"""Connections one client may hold open at once (a shared trigger client queues beyond this)."""

USER_AGENT = f"{DISTRIBUTION}/{__version__}"
"""Sent with every API call: the distribution and its version, as a package index names them."""

PATH_FIELDS = ("create_path", "info_path", "balance_path", "estimate_path")
"""The endpoint paths a connection may override (for proxies and gateways)."""


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every client.

    Building one loads the CA bundle (~35 ms): too long to repeat per client,
    and far too long to do on a triggerer's event loop (async callers build it in a
    worker thread first: ``flux_provider.hooks.event_loop.async_io_ready`` runs it through
    ``loop.run_in_executor``).
    """
    return httpx.create_ssl_context()


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url_problem(base_url: str) -> str | None:
    """Why ``base_url`` cannot be the API's address, or ``None`` if it can."""
    expected = f"base_url must be an absolute http(s) URL such as {DEFAULT_BASE_URL!r}"
    try:
        parts = urlsplit(base_url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"{expected}: {exc}"
    if parts.scheme not in ("http", "https") or not host:
        return f"{expected}, got {base_url!r}"
    if parts.username is not None or parts.password is not None:
        # Not echoed: the credentials would end up in the log.
        return (
            f"{expected} without credentials (user:password@{host}): "
            "put the API key in the connection's password"
        )
    if parts.query or parts.fragment:
        # Not echoed either: a query is where a misplaced key would be.
        where = f"{parts.scheme}://{parts.netloc}{parts.path}"
        return f"{expected} without a query or fragment (got one after {where!r})"
    if parts.netloc.endswith(":") or port == 0:
        return f"{expected} with a port in 1-65535, got {base_url!r}"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{expected}: invalid IPv6 host {host!r}"
    elif not all(char.isalnum() or char in "-._" for char in host):
        return f"{expected}: invalid host name {host!r}"
    return None


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to reach the API. The key is never part of ``repr``."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    auth_header: str = DEFAULT_AUTH_HEADER
    create_path: str = DEFAULT_CREATE_PATH
    info_path: str = DEFAULT_INFO_PATH
    balance_path: str = DEFAULT_BALANCE_PATH
    estimate_path: str = DEFAULT_ESTIMATE_PATH
    timeout: float = DEFAULT_TIMEOUT
    allow_insecure_http: bool = False
    max_response_bytes: int = MAX_RESPONSE_BYTES
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_key.strip():
            raise ValueError("api_key is empty: set the connection's password to the API key")
        problem = _base_url_problem(self.base_url)
        if problem is not None:
            raise ValueError(problem)
        parts = urlsplit(self.base_url)
        if (
            parts.scheme == "http"
            and not self.allow_insecure_http
            and not is_loopback_host(parts.hostname or "")
        ):
            raise ValueError(
                f"base_url {self.base_url!r} is plain http to a remote host: the API key would "
                "travel unencrypted. Use https, or opt in with allow_insecure_http"
            )
        for name in PATH_FIELDS:
            if not getattr(self, name).startswith("/"):
                raise ValueError(f"{name} must start with '/', got {getattr(self, name)!r}")
        if not self.auth_header or not self.auth_header.strip():
            raise ValueError("auth_header must name a header, such as 'x-api-key'")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"timeout must be > 0 seconds (and finite), got {self.timeout}")

    def auth_headers(self) -> dict[str, str]:
        """The header that carries the key (``Authorization`` gets the ``Bearer`` scheme)."""
        if self.auth_header.lower() == "authorization":
            return {"Authorization": f"Bearer {self.api_key}"}
        return {self.auth_header: self.api_key}

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the key replaced."""
        return text.replace(self.api_key, "***") if self.api_key in text else text

    def httpx_options(self) -> dict[str, Any]:
        """Options shared by the sync and async httpx clients."""
        return {
            "base_url": self.base_url.rstrip("/"),
            # Said explicitly: only what the bounded decoder reads (never br or zstd).
            "headers": {
                **self.auth_headers(),
                "User-Agent": USER_AGENT,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            "follow_redirects": False,
            "verify": shared_ssl_context(),
            "limits": httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
        }
