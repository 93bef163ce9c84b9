"""An Airflow connection of type ``flux`` read as a :class:`~flux_provider.api.config.ClientConfig`.

The password is the API key, the host the API base URL (empty means ``https://api.crun.ai``, a
bare host name means https); the extras name the auth header, the endpoint paths, the request
timeout and the plain-http opt-in, by plain name or with the ``extra__flux__`` prefix older UIs
write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flux_provider.api.config import (
    DEFAULT_AUTH_HEADER,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    PATH_FIELDS,
    ClientConfig,
    is_loopback_host,
)
from flux_provider.api.errors import ConnectionConfigError


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    """An extra by plain name, or by the ``extra__flux__`` prefix older UIs write."""
    value = extras.get(name)
    if value in (None, ""):
        value = extras.get(f"extra__flux__{name}")
    return None if value == "" else value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _base_url(host: str | None, port: int | None) -> str:
    """The connection's host as a base URL: a full URL as is, a bare host name as https."""
    if not host:
        return DEFAULT_BASE_URL
    host = host.strip().rstrip("/")
    if "://" in host:
        return host
    scheme = "http" if is_loopback_host(host) else "https"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def build_config(
    *, password: str | None, host: str | None, port: int | None, extras: Mapping[str, Any]
) -> ClientConfig:
    """The client configuration described by a connection's fields."""
    timeout = _extra(extras, "timeout")
    try:
        seconds = float(timeout) if timeout is not None else DEFAULT_TIMEOUT
    except (TypeError, ValueError):
        raise ConnectionConfigError(
            f"the flux connection is misconfigured: the timeout extra must be a number of "
            f"seconds, got {timeout!r}"
        ) from None
    paths = {name: _extra(extras, name) for name in PATH_FIELDS}
    try:
        return ClientConfig(
            api_key=password or "",
            base_url=_base_url(host, port),
            auth_header=_extra(extras, "header_name") or DEFAULT_AUTH_HEADER,
            timeout=seconds,
            allow_insecure_http=_as_bool(_extra(extras, "allow_insecure_http")),
            **{name: path for name, path in paths.items() if path},
        )
    except ValueError as exc:
        raise ConnectionConfigError(f"the flux connection is misconfigured: {exc}") from None
