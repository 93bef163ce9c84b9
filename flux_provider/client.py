"""Sync and async clients of the FLUX task API over httpx (no Airflow imports).

Each client object holds one pooled ``httpx.Client`` / ``httpx.AsyncClient``
reused for every call. Calls retry with exponential backoff and jitter on
retryable outcomes, honouring ``Retry-After``; the body's ``code`` decides
over the HTTP status. Answers are read with a size cap, redirects are never
followed (the key goes only to the configured host), and server messages are
scrubbed of the key before they reach an exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ipaddress
import json
import math
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from flux_provider.errors import (
    FluxError,
    InvalidInputError,
    MalformedResponseError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    error_for_code,
)
from flux_provider.models import (
    MODEL_NAME,
    ApiEnvelope,
    CreateTaskData,
    CreateTaskRequest,
    Flux2MaxInput,
    TaskInfo,
    describe_validation_error,
    validate_input,
)
from flux_provider.polling import PollSchedule, TaskWait

DEFAULT_BASE_URL = "https://api.kie.ai"
DEFAULT_CREATE_PATH = "/api/v1/jobs/createTask"
DEFAULT_INFO_PATH = "/api/v1/jobs/recordInfo"
DEFAULT_AUTH_HEADER = "x-api-key"
DEFAULT_TIMEOUT = 30.0
DEFAULT_WAIT_TIMEOUT = 15 * 60.0
KEEPALIVE_EXPIRY = 30.0
"""Seconds an idle pooled connection stays open: above the 5 s poll cap (httpx's default of 5 s
made every poll at the cap reconnect), below common server idle timeouts (60-75 s)."""
MAX_RESPONSE_BYTES = 1 << 20
"""API answers are a few hundred bytes; anything past 1 MiB is refused unread."""

USER_AGENT = "airflow-provider-flux/0.1"


class ConnectionFailedError(TransportError):
    """The connection could not be opened: the request never left, so resending is safe."""


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every client.

    Building one loads the CA bundle (~35 ms): too long to repeat per client,
    and far too long to do on a triggerer's event loop (async callers get it
    with ``await asyncio.to_thread(shared_ssl_context)``).
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
class RetryPolicy:
    """How one API call is retried: ``max_attempts`` in all, exponential backoff with jitter."""

    max_attempts: int = 4
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    retry_after_max: float = 120.0

    def delay(self, attempt: int, error: FluxError, rng: random.Random) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): the server's ``Retry-After`` wins."""
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.retry_after_max)
        ceiling = min(self.backoff_max, math.ldexp(self.backoff_initial, attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to reach the API. The key is never part of ``repr``."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    auth_header: str = DEFAULT_AUTH_HEADER
    create_path: str = DEFAULT_CREATE_PATH
    info_path: str = DEFAULT_INFO_PATH
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
        for name in ("create_path", "info_path"):
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
            "headers": {**self.auth_headers(), "User-Agent": USER_AGENT},
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            "follow_redirects": False,
            "verify": shared_ssl_context(),
            "limits": httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY
            ),
        }


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or HTTP date); ``None`` if unusable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (ValueError, TypeError, OverflowError, IndexError):
            return None  # A garbled header must not turn an API error into a crash.
    return max(seconds, 0.0) if math.isfinite(seconds) else None


MIN_SCRUBBED_KEY_CHARS = 5
"""Shorter keys are not scrubbed from answers: like Airflow's masker, they would mangle text."""


def _scrub(payload: Any, secret: str) -> Any:
    """``payload`` (decoded JSON) with ``secret`` replaced in every string value.

    Iterative, so a deeply nested answer cannot exhaust the stack.
    """
    if len(secret) < MIN_SCRUBBED_KEY_CHARS:
        return payload
    if isinstance(payload, str):
        return payload.replace(secret, "***")
    stack = [payload]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for slot, value in list(items):
            if isinstance(value, str) and secret in value:
                node[slot] = value.replace(secret, "***")
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return payload


def interpret_answer(
    config: ClientConfig,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    flux_task_id: str | None = None,
) -> ApiEnvelope:
    """Turn one raw answer into an envelope with ``code == 200`` or raise its :class:`FluxError`.

    The body's ``code`` decides over the HTTP status; a body that is not JSON
    falls back on the HTTP status, and on a 2xx is a malformed answer. The key
    is scrubbed from every string of the answer before anything reads it, so a
    server that echoes it cannot put it into an error, a log, XCom or an event.
    """
    retry_after = _parse_retry_after(headers.get("retry-after"))
    try:
        # ValueError covers bad UTF-8, bad JSON and over-long integers; RecursionError, nesting.
        payload = _scrub(json.loads(body.decode("utf-8")), config.api_key)
    except (ValueError, RecursionError) as exc:
        if status >= 300:
            raise error_for_code(
                status, flux_task_id=flux_task_id, retry_after=retry_after
            ) from None
        raise MalformedResponseError(
            f"the API answered HTTP {status} with a body that is not JSON "
            f"({type(exc).__name__}, {len(body)} bytes)",
            status_code=status,
            flux_task_id=flux_task_id,
        ) from None
    if not isinstance(payload, dict) or "code" not in payload:
        if status >= 300:
            raise error_for_code(status, flux_task_id=flux_task_id, retry_after=retry_after)
        raise MalformedResponseError(
            "the API's answer has no 'code' field", status_code=status, flux_task_id=flux_task_id
        )
    try:
        envelope = ApiEnvelope.model_validate(payload)
    except ValidationError as exc:
        raise MalformedResponseError(
            "the API's answer has the wrong shape: " + describe_validation_error(exc),
            status_code=status,
            flux_task_id=flux_task_id,
        ) from None
    if envelope.code != 200:
        raise error_for_code(
            envelope.code,
            config.redact(envelope.text)[:500],
            flux_task_id=flux_task_id,
            retry_after=retry_after,
        )
    return envelope


def _check_size(config: ClientConfig, headers: Mapping[str, str]) -> None:
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > config.max_response_bytes:
        raise MalformedResponseError(
            f"the API's answer declares {declared} bytes, over the "
            f"{config.max_response_bytes}-byte limit",
            retryable=False,
        )


def _append_capped(config: ClientConfig, buffer: bytearray, chunk: bytes) -> None:
    buffer += chunk
    if len(buffer) > config.max_response_bytes:
        raise MalformedResponseError(
            f"the API's answer is over the {config.max_response_bytes}-byte limit",
            retryable=False,
        )


def _transport_error(config: ClientConfig, exc: httpx.TransportError, what: str) -> TransportError:
    cls: type[TransportError]
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        cls = ConnectionFailedError
    elif isinstance(exc, httpx.TimeoutException):
        cls = RequestTimeoutError
    else:
        cls = TransportError
    # A protocol error may quote what the server sent, which may echo the key.
    return cls(config.redact(f"{what} failed: {type(exc).__name__}: {exc}"))


_REJECTED_BEFORE_CREATING = (
    RateLimitedError,
    ServiceUnavailableError,
    ServerError,
    ConnectionFailedError,
)


def _may_resend(error: FluxError, idempotent: bool) -> bool:
    """Whether the client itself may send the request again.

    GETs are resent on any retryable error. A create is resent only when the
    server refused it outright or the request never left: a timeout or a reset
    after sending may have created a task, and a blind resend could pay twice.
    """
    if not error.retryable:
        return False
    return idempotent or isinstance(error, _REJECTED_BEFORE_CREATING)


@dataclass
class Attempts:
    """The retry bookkeeping of one call or download, shared by every retrying loop."""

    policy: RetryPolicy
    rng: random.Random
    idempotent: bool
    attempt: int = 0

    def delay_after(self, error: FluxError) -> float:
        """Back-off before the next attempt; re-raises ``error`` when none is allowed."""
        self.attempt += 1
        if self.attempt >= self.policy.max_attempts or not _may_resend(error, self.idempotent):
            raise error
        return self.policy.delay(self.attempt, error, self.rng)


def _create_body(
    input: Flux2MaxInput | Mapping[str, Any], model: str, callback_url: str | None
) -> dict[str, Any]:
    checked = validate_input(dict(input) if isinstance(input, Mapping) else input)
    try:
        request = CreateTaskRequest(model=model, callBackUrl=callback_url, input=checked.to_wire())
    except ValidationError as exc:
        raise InvalidInputError(describe_validation_error(exc)) from None
    return request.to_wire()


def _task_id_from(envelope: ApiEnvelope) -> str:
    try:
        return CreateTaskData.model_validate(envelope.data).task_id
    except ValidationError as exc:
        raise MalformedResponseError(
            "the createTask answer has no usable taskId: " + describe_validation_error(exc)
        ) from None


def _task_info_from(config: ClientConfig, envelope: ApiEnvelope, flux_task_id: str) -> TaskInfo:
    try:
        info = TaskInfo.model_validate(envelope.data)
        # resultJson and param are JSON inside JSON: their decoded strings were never scrubbed.
        echoed = config.api_key in info.model_dump_json()
    except ValidationError as exc:
        raise MalformedResponseError(
            "the task-info answer could not be parsed: "
            + config.redact(describe_validation_error(exc)),
            flux_task_id=flux_task_id,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise MalformedResponseError(
            f"the task-info answer could not be parsed: {type(exc).__name__}",
            flux_task_id=flux_task_id,
        ) from None
    if echoed:
        raise MalformedResponseError(
            "the task-info answer repeats the API key: refusing it",
            flux_task_id=flux_task_id,
            retryable=False,
        )
    return info


class _ClientBase:
    def __init__(self, config: ClientConfig, rng: random.Random | None) -> None:
        self.config = config
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.config.base_url!r})"

    def _attempts(self, idempotent: bool, retry: bool) -> Attempts:
        return Attempts(self.config.retry if retry else NO_RETRY, self._rng, idempotent)

    def _new_wait(
        self,
        flux_task_id: str,
        poll_interval: float | None,
        timeout: float,
        clock: Callable[[], float],
    ) -> TaskWait:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if poll_interval is not None and poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        return TaskWait(
            flux_task_id,
            deadline=clock() + timeout,
            schedule=PollSchedule.from_interval(poll_interval),
            clock=clock,
        )


class FluxClient(_ClientBase):
    """Blocking client: ``create_task``, ``get_task``, ``wait_for_task``."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(config, rng)
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(transport=transport, **config.httpx_options())

    def __enter__(self) -> FluxClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def _send(self, request: httpx.Request, flux_task_id: str | None) -> ApiEnvelope:
        try:
            response = self._http.send(request, stream=True)
            try:
                _check_size(self.config, response.headers)
                body = bytearray()
                for chunk in response.iter_bytes():
                    _append_capped(self.config, body, chunk)
            finally:
                response.close()
        except httpx.TransportError as exc:
            raise _transport_error(
                self.config, exc, f"{request.method} {request.url.path}"
            ) from None
        return interpret_answer(
            self.config,
            response.status_code,
            response.headers,
            bytes(body),
            flux_task_id=flux_task_id,
        )

    def _call(
        self,
        request: httpx.Request,
        *,
        idempotent: bool,
        retry: bool = True,
        flux_task_id: str | None = None,
    ) -> ApiEnvelope:
        attempts = self._attempts(idempotent, retry)
        while True:
            try:
                return self._send(request, flux_task_id)
            except FluxError as error:
                self._sleep(attempts.delay_after(error))

    def create_task(
        self,
        input: Flux2MaxInput | Mapping[str, Any],
        *,
        model: str = MODEL_NAME,
        callback_url: str | None = None,
    ) -> str:
        """Validate ``input``, submit a task and return its id."""
        body = _create_body(input, model, callback_url)
        request = self._http.build_request("POST", self.config.create_path, json=body)
        return _task_id_from(self._call(request, idempotent=False))

    def get_task(self, flux_task_id: str, *, retry: bool = True) -> TaskInfo:
        """Fetch a task's state and result (one poll, retried on transient errors)."""
        request = self._http.build_request(
            "GET", self.config.info_path, params={"taskId": flux_task_id}
        )
        envelope = self._call(request, idempotent=True, retry=retry, flux_task_id=flux_task_id)
        return _task_info_from(self.config, envelope, flux_task_id)

    def wait_for_task(
        self,
        flux_task_id: str,
        *,
        poll_interval: float | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_poll: Callable[[TaskWait, TaskInfo | None], None] | None = None,
    ) -> TaskInfo:
        """Poll until the task ends and return its final info (``success`` or ``fail``).

        ``poll_interval=None`` uses the adaptive schedule. Raises
        :class:`TaskTimeoutError` after ``timeout`` seconds, or the poll error
        once it is hopeless or too many polls failed in a row.
        """
        wait = self._new_wait(flux_task_id, poll_interval, timeout, self._clock)
        while True:
            info: TaskInfo | None = None
            try:
                info = self.get_task(flux_task_id, retry=False)
            except FluxError as error:
                delay = wait.clamp(wait.record_error(error))
            else:
                if wait.record_info(info) is not None:
                    return info
                delay = wait.next_delay()
            if on_poll is not None:
                on_poll(wait, info)
            wait.check_deadline()
            self._sleep(delay)


class AsyncFluxClient(_ClientBase):
    """Asynchronous client: ``create_task`` and ``get_task`` as coroutines."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(config, rng)
        self._sleep = sleep
        self._http = httpx.AsyncClient(transport=transport, **config.httpx_options())

    async def __aenter__(self) -> AsyncFluxClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def _send(self, request: httpx.Request, flux_task_id: str | None) -> ApiEnvelope:
        try:
            response = await self._http.send(request, stream=True)
            try:
                _check_size(self.config, response.headers)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    _append_capped(self.config, body, chunk)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise _transport_error(
                self.config, exc, f"{request.method} {request.url.path}"
            ) from None
        return interpret_answer(
            self.config,
            response.status_code,
            response.headers,
            bytes(body),
            flux_task_id=flux_task_id,
        )

    async def _call(
        self,
        request: httpx.Request,
        *,
        idempotent: bool,
        retry: bool = True,
        flux_task_id: str | None = None,
    ) -> ApiEnvelope:
        attempts = self._attempts(idempotent, retry)
        while True:
            try:
                return await self._send(request, flux_task_id)
            except FluxError as error:
                await self._sleep(attempts.delay_after(error))

    async def create_task(
        self,
        input: Flux2MaxInput | Mapping[str, Any],
        *,
        model: str = MODEL_NAME,
        callback_url: str | None = None,
    ) -> str:
        """Validate ``input``, submit a task and return its id."""
        body = _create_body(input, model, callback_url)
        request = self._http.build_request("POST", self.config.create_path, json=body)
        return _task_id_from(await self._call(request, idempotent=False))

    async def get_task(self, flux_task_id: str, *, retry: bool = True) -> TaskInfo:
        """Fetch a task's state and result (one poll, retried on transient errors)."""
        request = self._http.build_request(
            "GET", self.config.info_path, params={"taskId": flux_task_id}
        )
        envelope = await self._call(
            request, idempotent=True, retry=retry, flux_task_id=flux_task_id
        )
        return _task_info_from(self.config, envelope, flux_task_id)
