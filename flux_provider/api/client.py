"""Sync and async clients of the Crun task API over httpx (no Airflow imports).

Each client object holds one pooled ``httpx.Client`` / ``httpx.AsyncClient``
reused for every call. Calls retry as :mod:`flux_provider.api.retry` says; answers
are read raw, decoded within a size cap on the wire and once decoded
(:mod:`flux_provider.api.decoding`), and interpreted by :mod:`flux_provider.api.wire`;
every request, answer included, ends within the configured timeout
(:mod:`flux_provider.api.network`); redirects are never followed (the key goes only to
the configured host).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from flux_provider.api.config import (
    DEFAULT_WAIT_TIMEOUT,
    KEEPALIVE_EXPIRY,
    MAX_CONNECTIONS,
    ClientConfig,
    shared_ssl_context,
)
from flux_provider.api.decoding import BodyError, BodyTooLargeError, adecoded_body, decoded_body
from flux_provider.api.errors import (
    ConnectionFailedError,
    FluxError,
    InvalidInputError,
    MalformedResponseError,
    RequestTimeoutError,
    TransportError,
)
from flux_provider.api.formatting import bytes_text, seconds_text
from flux_provider.api.models import (
    MODEL_NAME,
    Flux2MaxInput,
    TaskInfo,
    check_http_url,
    check_model,
    validate_input,
)
from flux_provider.api.network import BoundedTransport, request_deadline, within
from flux_provider.api.polling import OnPoll, TaskWait, WaitSettings, wait_async, wait_blocking
from flux_provider.api.retry import NO_RETRY, Attempts
from flux_provider.api.wire import (
    Envelope,
    balance_of,
    create_body,
    estimate_of,
    read_answer,
    task_id_of,
    task_info_of,
    task_query,
)

TaskInput = Flux2MaxInput | Mapping[str, Any]
"""A task's input: validated already, or a mapping validated before anything is sent."""


def _check_size(config: ClientConfig, headers: Mapping[str, str]) -> None:
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > config.max_response_bytes:
        raise MalformedResponseError(
            f"the API's answer declares {bytes_text(int(declared))}, over the "
            f"{bytes_text(config.max_response_bytes)} limit",
            retryable=False,
        )


def _malformed(error: BodyError) -> MalformedResponseError:
    if isinstance(error, BodyTooLargeError):
        return MalformedResponseError(
            f"the API's answer is over the {bytes_text(error.limit)} limit ({error.where})",
            retryable=False,
        )
    return MalformedResponseError(f"the API's answer {error.reason}", retryable=error.retryable)


def _read_body(config: ClientConfig, response: httpx.Response) -> bytearray:
    """The answer's body, read raw and decoded within the cap."""
    _check_size(config, response.headers)
    body = bytearray()
    try:
        for piece in decoded_body(response, config.max_response_bytes):
            body += piece
    except BodyError as error:
        raise _malformed(error) from None
    return body


async def _aread_body(config: ClientConfig, response: httpx.Response) -> bytearray:
    """The async twin of :func:`_read_body`."""
    _check_size(config, response.headers)
    body = bytearray()
    try:
        async for piece in adecoded_body(response, config.max_response_bytes):
            body += piece
    except BodyError as error:
        raise _malformed(error) from None
    return body


def _cut_off(config: ClientConfig, request: httpx.Request) -> RequestTimeoutError:
    return RequestTimeoutError(
        f"{request.method} {request.url.path} failed: no complete answer within "
        f"{seconds_text(config.timeout)} (the request timeout)"
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


def _body_for(input: TaskInput, model: str, callback_url: str | None) -> dict[str, Any]:
    """The validated request body (raises :class:`InvalidInputError` before anything is sent)."""
    checked = validate_input(dict(input) if isinstance(input, Mapping) else input)
    check_model(model)
    if callback_url is not None:
        try:
            check_http_url(callback_url, "callback_url")
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    return create_body(checked, model=model, callback_url=callback_url)


@dataclass(frozen=True)
class _Call:
    """One API call, before any I/O: what to send and whether a resend is safe."""

    method: str
    path: str
    idempotent: bool
    flux_task_id: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class _ClientBase:
    """What both clients share: the calls they make and how answers are read (no I/O)."""

    def __init__(self, config: ClientConfig, rng: random.Random | None) -> None:
        self.config = config
        self._rng = rng or random.Random()

    def _create_call(self, input: TaskInput, model: str, callback_url: str | None) -> _Call:
        body = _body_for(input, model, callback_url)
        return _Call("POST", self.config.create_path, idempotent=False, options={"json": body})

    def _info_call(self, flux_task_id: str) -> _Call:
        return _Call(
            "GET",
            self.config.info_path,
            idempotent=True,
            flux_task_id=flux_task_id,
            options={"params": task_query(flux_task_id)},
        )

    def _balance_call(self) -> _Call:
        return _Call("GET", self.config.balance_path, idempotent=True)

    def _estimate_call(self, input: TaskInput, model: str) -> _Call:
        body = _body_for(input, model, None)
        # Creates nothing, so it is as safe to resend as a GET.
        return _Call("POST", self.config.estimate_path, idempotent=True, options={"json": body})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.config.base_url!r})"

    def _attempts(self, idempotent: bool, retry: bool) -> Attempts:
        return Attempts(self.config.retry if retry else NO_RETRY, self._rng, idempotent)

    def _answer(
        self, response: httpx.Response, body: bytearray, flux_task_id: str | None
    ) -> Envelope:
        return read_answer(
            response.status_code,
            response.headers,
            bytes(body),
            secret=self.config.api_key,
            flux_task_id=flux_task_id,
        )

    def _task_info(self, envelope: Envelope, flux_task_id: str) -> TaskInfo:
        return task_info_of(envelope.data, flux_task_id=flux_task_id, secret=self.config.api_key)

    def _new_wait(
        self,
        flux_task_id: str,
        poll_interval: float | None,
        timeout: float,
        clock: Callable[[], float],
    ) -> TaskWait:
        return WaitSettings(poll_interval=poll_interval, timeout=timeout).start(
            flux_task_id, clock=clock
        )


class FluxClient(_ClientBase):
    """Blocking client: tasks (create, get, wait) and credits (balance, estimate)."""

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
        if transport is None:
            transport = BoundedTransport(
                ssl_context=shared_ssl_context(),
                max_connections=MAX_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
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

    def _send(self, request: httpx.Request, flux_task_id: str | None) -> Envelope:
        try:
            with request_deadline(self.config.timeout):
                response = self._http.send(request, stream=True)
                try:
                    body = _read_body(self.config, response)
                finally:
                    response.close()
        except httpx.TransportError as exc:
            raise _transport_error(
                self.config, exc, f"{request.method} {request.url.path}"
            ) from None
        return self._answer(response, body, flux_task_id)

    def _call(self, call: _Call, *, retry: bool = True) -> Envelope:
        request = self._http.build_request(call.method, call.path, **call.options)
        attempts = self._attempts(call.idempotent, retry)
        while True:
            try:
                return self._send(request, call.flux_task_id)
            except FluxError as error:
                self._sleep(attempts.delay_after(error))

    def create_task(
        self, input: TaskInput, *, model: str = MODEL_NAME, callback_url: str | None = None
    ) -> str:
        """Validate ``input``, submit a task and return its id."""
        return task_id_of(self._call(self._create_call(input, model, callback_url)))

    def get_task(self, flux_task_id: str, *, retry: bool = True) -> TaskInfo:
        """Fetch a task's state and result (one poll, retried on transient errors)."""
        envelope = self._call(self._info_call(flux_task_id), retry=retry)
        return self._task_info(envelope, flux_task_id)

    def get_balance(self, *, retry: bool = True) -> float:
        """The account's credits (free to call)."""
        return balance_of(self._call(self._balance_call(), retry=retry))

    def estimate_credits(self, input: TaskInput, *, model: str = MODEL_NAME) -> float:
        """What a task with ``input`` would cost, in credits (creates nothing)."""
        return estimate_of(self._call(self._estimate_call(input, model)))

    def wait_for_task(
        self,
        flux_task_id: str,
        *,
        poll_interval: float | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_poll: OnPoll | None = None,
    ) -> TaskInfo:
        """Poll until the task ends and return its final info (``success`` or ``failed``).

        ``poll_interval=None`` uses the adaptive schedule. Raises
        :class:`TaskTimeoutError` after ``timeout`` seconds, or the poll error
        once it is hopeless or too many polls failed in a row.
        """
        wait = self._new_wait(flux_task_id, poll_interval, timeout, self._clock)
        return self.follow(wait, on_poll=on_poll)

    def follow(
        self, wait: TaskWait, *, on_poll: OnPoll | None = None, first_delay: float = 0.0
    ) -> TaskInfo:
        """Poll ``wait``'s task until it ends, as ``wait`` decides (``first_delay`` before the
        first poll); :meth:`wait_for_task` with a wait built elsewhere."""
        if first_delay > 0:
            self._sleep(wait.clamp(first_delay))
        return wait_blocking(
            wait,
            lambda: self.get_task(wait.flux_task_id, retry=False),
            sleep=self._sleep,
            on_poll=on_poll,
        )


class AsyncFluxClient(_ClientBase):
    """Asynchronous client: the same calls as coroutines, and the trigger's wait."""

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

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def _send(self, request: httpx.Request, flux_task_id: str | None) -> Envelope:
        try:
            response, body = await within(self.config.timeout, self._exchange(request))
        except asyncio.TimeoutError:
            raise _cut_off(self.config, request) from None
        except httpx.TransportError as exc:
            raise _transport_error(
                self.config, exc, f"{request.method} {request.url.path}"
            ) from None
        return self._answer(response, body, flux_task_id)

    async def _exchange(self, request: httpx.Request) -> tuple[httpx.Response, bytearray]:
        """Send ``request`` and read its answer whole (cancellable at any point)."""
        response = await self._http.send(request, stream=True)
        try:
            return response, await _aread_body(self.config, response)
        finally:
            await response.aclose()

    async def _call(self, call: _Call, *, retry: bool = True) -> Envelope:
        request = self._http.build_request(call.method, call.path, **call.options)
        attempts = self._attempts(call.idempotent, retry)
        while True:
            try:
                return await self._send(request, call.flux_task_id)
            except FluxError as error:
                await self._sleep(attempts.delay_after(error))

    async def create_task(
        self, input: TaskInput, *, model: str = MODEL_NAME, callback_url: str | None = None
    ) -> str:
        """Validate ``input``, submit a task and return its id."""
        return task_id_of(await self._call(self._create_call(input, model, callback_url)))

    async def get_task(self, flux_task_id: str, *, retry: bool = True) -> TaskInfo:
        """Fetch a task's state and result (one poll, retried on transient errors)."""
        envelope = await self._call(self._info_call(flux_task_id), retry=retry)
        return self._task_info(envelope, flux_task_id)

    async def get_balance(self, *, retry: bool = True) -> float:
        """The account's credits (free to call)."""
        return balance_of(await self._call(self._balance_call(), retry=retry))

    async def estimate_credits(self, input: TaskInput, *, model: str = MODEL_NAME) -> float:
        """What a task with ``input`` would cost, in credits (creates nothing)."""
        return estimate_of(await self._call(self._estimate_call(input, model)))

    async def wait_for_task(
        self,
        flux_task_id: str,
        *,
        poll_interval: float | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_poll: OnPoll | None = None,
    ) -> TaskInfo:
        """Async twin of :meth:`FluxClient.wait_for_task` (the same arguments)."""
        wait = self._new_wait(flux_task_id, poll_interval, timeout, time.time)
        return await self.follow(wait, on_poll=on_poll)

    async def follow(
        self, wait: TaskWait, *, on_poll: OnPoll | None = None, first_delay: float = 0.0
    ) -> TaskInfo:
        """Poll ``wait``'s task until it ends (the triggers' loop; see :func:`wait_async`)."""
        call = self._info_call(wait.flux_task_id)
        # Every poll sends the same GET: built once, as building one (URL merging and
        # checks) costs about a tenth of a poll's CPU.
        request = self._http.build_request(call.method, call.path, **call.options)

        async def poll() -> TaskInfo:
            envelope = await self._send(request, call.flux_task_id)
            return self._task_info(envelope, wait.flux_task_id)

        return await wait_async(
            wait, poll, sleep=self._sleep, on_poll=on_poll, first_delay=first_delay
        )
