"""The fake's answer to each HTTP request: routing, faults, the API key, each endpoint."""

from __future__ import annotations

import re
import time
from email.message import Message
from urllib.parse import parse_qsl, urlsplit

from .account import InsufficientCreditsError
from .httpd import IncomingRequest
from .inflight import InFlightLimitError
from .png import render_image
from .state import ServerState
from .stats import REDACTED, RecordedRequest
from .wire import (
    MessageKey,
    RejectedRequestError,
    Reply,
    error_reply,
    format_seconds,
    ok_reply,
    parse_create_body,
    route,
)

__all__ = ["ApiResponder"]


def _redacted(headers: Message, auth_header: str) -> dict[str, str]:
    secret = {"authorization", "x-api-key", auth_header.lower()}
    return {
        name.lower(): REDACTED if name.lower() in secret else value
        for name, value in headers.items()
    }


class ApiResponder:
    """Answers requests to the fake API from its :class:`~.state.ServerState`.

    Called from the HTTP server's handler threads, without the state's lock held. Each
    request is logged and counted first; a queued fault then answers it (before the key is
    checked, like a gateway would); result files need no key; every other route does.
    """

    def __init__(
        self,
        state: ServerState,
        *,
        api_key: str,
        auth_header: str,
        message_key: MessageKey,
        estimate_endpoint: bool,
    ) -> None:
        """Answer for ``state``, requiring ``api_key`` in ``auth_header``."""
        self._state = state
        self._api_key = api_key
        self._auth_header = auth_header
        self._bearer = auth_header.lower() == "authorization"
        self._message_key: MessageKey = message_key
        self._estimate_endpoint = estimate_endpoint

    def __call__(self, incoming: IncomingRequest) -> Reply | None:
        """The answer to one request; ``None`` drops the connection."""
        url = urlsplit(incoming.target)
        endpoint, image = route(incoming.method, url.path)
        if endpoint == "estimate" and not self._estimate_endpoint:
            endpoint = None
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        request = RecordedRequest(
            method=incoming.method,
            path=url.path,
            query=query,
            headers=_redacted(incoming.headers, self._auth_header),
            body=incoming.body,
            received_at=time.monotonic(),
            client_port=incoming.client_port,
        )
        fault = self._state.receive(endpoint, request)
        if fault is not None:
            if fault.delay > 0:
                time.sleep(fault.delay)
            if fault.drop:
                return None
            reply = fault.reply(self._message_key)
            if reply is not None:
                return reply
        if endpoint is None:
            return self._error(404, "not found")
        if endpoint == "image":
            return self._image(image)
        refusal = self._refusal(incoming.headers.get(self._auth_header))
        if refusal is not None:
            return refusal
        if endpoint == "create":
            return self._create(incoming.body)
        if endpoint == "poll":
            return self._task_info(query.get("task_id", ""))
        if endpoint == "balance":
            return self._ok({"balance": self._state.balance()})
        return self._estimate(incoming.body)

    def _ok(self, data: object) -> Reply:
        return ok_reply(data, message_key=self._message_key)

    def _error(self, status: int, message: str) -> Reply:
        return error_reply(status, message, message_key=self._message_key)

    def _refusal(self, credential: str | None) -> Reply | None:
        """The 401/403 answer for ``credential``, or ``None`` when it may pass."""
        if not self._authorized(credential):
            if self._bearer:
                return self._error(401, "invalid or missing API key (send 'Bearer <key>')")
            return self._error(401, f"invalid or missing API key in the {self._auth_header} header")
        with self._state.lock:
            disabled = self._state.key_disabled
        return self._error(403, "API key disabled") if disabled else None

    def _authorized(self, credential: str | None) -> bool:
        if credential is None:
            return False
        if not self._bearer:
            return credential == self._api_key
        scheme, _, token = credential.partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self._api_key

    def _create(self, body: bytes) -> Reply:
        try:
            request = parse_create_body(body)
            task_id = self._state.create(
                model=request.model,
                input=request.input,
                callback_url=request.callback_url,
                via_api=True,
            )
        except RejectedRequestError as exc:
            return self._error(422, str(exc))
        except InFlightLimitError as exc:
            retry_after = (("Retry-After", format_seconds(exc.retry_after)),)
            return error_reply(429, str(exc), headers=retry_after, message_key=self._message_key)
        except InsufficientCreditsError:
            return self._error(402, "insufficient credits")
        return self._ok({"task_id": task_id})

    def _estimate(self, body: bytes) -> Reply:
        try:
            request = parse_create_body(body)
        except RejectedRequestError as exc:
            return self._error(422, str(exc))
        return self._ok({"credits": self._state.account.cost(request.input), "estimated": False})

    def _task_info(self, task_id: str) -> Reply:
        if not task_id:
            return self._error(422, "query parameter 'task_id' is required")
        data = self._state.task_info(task_id)
        if data is None:
            return self._error(404, "task not found")
        return self._ok(data)

    def _image(self, match: re.Match[str] | None) -> Reply:
        if match is None:
            return self._error(404, "file not found")
        task_input = self._state.succeeded_input(match["task_id"])
        if task_input is None or int(match["index"]) != 0 or match["ext"].lower() != "png":
            return self._error(404, "file not found")
        prompt = task_input.get("prompt")
        image = render_image(
            prompt if isinstance(prompt, str) else "",
            task_input.get("seed"),
            task_input.get("aspect_ratio"),
        )
        return Reply(status=200, body=image, content_type="image/png")
