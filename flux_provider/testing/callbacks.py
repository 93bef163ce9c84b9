"""Posting task callbacks: JSON POSTs to loopback URLs, failures ignored."""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.request
from dataclasses import dataclass

__all__ = ["Callback", "post_callback"]

_CALLBACK_TIMEOUT = 5.0
# Callbacks only go to loopback addresses, so never route them through an environment proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Callback:
    """A callback owed to ``url``: the JSON ``payload`` to POST there."""

    url: str
    payload: dict[str, object]


def post_callback(callback: Callback) -> None:
    """POST the payload; the receiver's failures are the code under test's business."""
    request = urllib.request.Request(  # noqa: S310 - only loopback http URLs get here
        callback.url,
        data=json.dumps(callback.payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with (
        contextlib.suppress(OSError, ValueError, http.client.HTTPException),
        _OPENER.open(request, timeout=_CALLBACK_TIMEOUT) as response,
    ):
        response.read()
