"""The security headers every response of the plugin carries, errors included.

The plugin's app answers on the Airflow UI's own origin, so none of its responses may be read
as anything but what it says (``nosniff``) or run anything there: a route sets its own
``Content-Security-Policy`` (pages: :func:`~flux_provider.plugins.pages.page_policy`), and
every other answer (images, 401, 403, 404, 422, 500) gets :data:`SANDBOX_POLICY`.
"""

from __future__ import annotations

from typing import Any

SANDBOX_POLICY = "default-src 'none'; frame-ancestors 'self'; sandbox"
"""Images and errors: nothing loads, and a document opened from them is sandboxed."""

_ALWAYS = {b"x-content-type-options": b"nosniff", b"referrer-policy": b"no-referrer"}
_POLICY = b"content-security-policy"


class SecurityHeaders:
    """ASGI middleware around the whole app, so even the server-error answer passes it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve through the app, adding the headers to the start of each HTTP response."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Any) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": with_security_headers(message.get("headers"))}
            await send(message)

        await self.app(scope, receive, send_secured)


def with_security_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """``headers`` (raw ASGI pairs) with ``nosniff``, ``no-referrer`` and a CSP (the default
    unless the route set one)."""
    kept = [
        (bytes(name), bytes(value))
        for name, value in (headers or [])
        if bytes(name).lower() not in _ALWAYS
    ]
    if not any(name.lower() == _POLICY for name, _ in kept):
        kept.append((_POLICY, SANDBOX_POLICY.encode()))
    return kept + list(_ALWAYS.items())
