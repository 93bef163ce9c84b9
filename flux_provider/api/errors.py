"""The error taxonomy of the FLUX task API.

One class per outcome in the API's status-code table, plus the failures that
happen around it (transport, malformed answers, bad input caught locally, a
wait that ran out of time). Every error carries ``retryable``: ``True`` when a
later attempt may succeed (Airflow's retries should apply), ``False`` when no
retry can help (fail at once, spend no more credits).

No message built here ever contains the API key: the client redacts server
messages before they reach these classes.
"""

from __future__ import annotations

import re


class FluxError(Exception):
    """Base class of every error raised by this package's API layer.

    A subclass declares its default with ``class X(FluxError, retryable=True)``; an instance
    may override it (``retryable=`` in the constructor).
    """

    retryable: bool = False
    """Whether a later attempt may succeed."""

    def __init_subclass__(cls, *, retryable: bool | None = None) -> None:
        super().__init_subclass__()
        if retryable is not None:
            cls.retryable = retryable

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        server_message: str | None = None,
        flux_task_id: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        fail_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.server_message = server_message
        self.flux_task_id = flux_task_id
        self.retry_after = retry_after
        self.fail_code = fail_code
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"code={self.status_code}")
        if self.flux_task_id:
            parts.append(f"flux_task_id={self.flux_task_id}")
        if self.server_message and self.server_message not in self.message:
            parts.append(f"server said: {self.server_message!r}")
        return " | ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, retryable={self.retryable})"


class InvalidInputError(FluxError, ValueError):
    """The request was rejected locally, before any HTTP call (nothing was sent or charged)."""


class AuthenticationError(FluxError):
    """401 (missing or invalid API key) or 403 (the key is disabled)."""


class InsufficientCreditsError(FluxError):
    """402: the account has no credits left; a retry cannot help until someone pays."""


class NotFoundError(FluxError):
    """404: unknown endpoint (wrong base URL or path) or unknown task."""


class InvalidRequestError(FluxError):
    """422: the API rejected the request's parameters."""


class RateLimitedError(FluxError, retryable=True):
    """429: too many requests; back off (honouring ``retry_after``) and retry."""


class ServiceUnavailableError(FluxError, retryable=True):
    """455: the service is under maintenance; back off and retry."""


class ServerError(FluxError, retryable=True):
    """500 (or another 5xx): the service failed; back off and retry."""


class GenerationFailedError(FluxError, retryable=True):
    """501 or a task that ended in state ``failed``.

    Retryable by default (a new task may succeed); not retryable when the
    failure code or message says the content itself was refused.
    """


class FeatureDisabledError(FluxError):
    """505: the feature is disabled for this account or model."""


class UnexpectedStatusError(FluxError):
    """A status code the API's documentation does not list."""


class NoResultError(FluxError, retryable=True):
    """The task ended in ``success`` but its answer holds no image URL.

    Retryable: the retry looks at the task again and submits anew if it still has none.
    """


class CreditLimitError(FluxError):
    """A credit check before submitting failed: the balance is too low or the task too dear."""


class ConnectionConfigError(FluxError, ValueError):
    """The Airflow connection cannot describe a usable client (no key, a bad URL, a bad extra)."""


class TransportError(FluxError, retryable=True):
    """The request did not complete: connection refused or reset, DNS, protocol error."""


class ConnectionFailedError(TransportError):
    """The connection could not be opened: the request never left, so resending is safe."""


class RequestTimeoutError(TransportError):
    """The request timed out (connect, read, write or pool)."""


class MalformedResponseError(FluxError, retryable=True):
    """The answer could not be understood: not JSON, wrong shape, oversized, not UTF-8."""


class TaskTimeoutError(FluxError, retryable=True):
    """Waiting for a task ran past its deadline; the task may still finish."""


_ERROR_BY_CODE: dict[int, type[FluxError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    422: InvalidRequestError,
    429: RateLimitedError,
    455: ServiceUnavailableError,
    500: ServerError,
    501: GenerationFailedError,
    505: FeatureDisabledError,
}

_DEFAULT_MESSAGE: dict[int, str] = {
    401: "authentication failed: the API key is missing or invalid",
    402: "insufficient credits on the account",
    403: "forbidden: the API key is disabled or not allowed here",
    404: "not found: check the base URL, the endpoint paths or the task id",
    422: "the API rejected the request as invalid",
    429: "rate limited by the API",
    455: "the API is unavailable (maintenance)",
    500: "the API reported a server error",
    501: "the generation failed",
    505: "the feature is disabled",
}


def error_class_for_code(code: int) -> type[FluxError]:
    """Return the error class for an API status code (the body's ``code`` or HTTP status)."""
    if code in _ERROR_BY_CODE:
        return _ERROR_BY_CODE[code]
    if 500 <= code < 600:
        return ServerError
    return UnexpectedStatusError


def error_for_code(
    code: int,
    server_message: str | None = None,
    *,
    flux_task_id: str | None = None,
    retry_after: float | None = None,
) -> FluxError:
    """Build the error for an API status code, keeping the server's message."""
    cls = error_class_for_code(code)
    message = _DEFAULT_MESSAGE.get(code, f"the API answered with unexpected code {code}")
    return cls(
        message,
        status_code=code,
        server_message=server_message or None,
        flux_task_id=flux_task_id,
        retry_after=retry_after,
    )


# Fail codes and messages that mean the request or its content was refused:
# a new task with the same input would be refused again.
_TERMINAL_FAIL_CODES = frozenset({"400", "401", "402", "403", "413", "422", "505"})
_TERMINAL_FAIL_WORDS = re.compile(
    r"moderat|nsfw|safety|content polic|sensitive|flagged|prohibited|not allowed|"
    r"invalid|validation|violat",
    re.IGNORECASE,
)


def generation_failure(
    fail_code: str | None, fail_msg: str | None, *, flux_task_id: str | None = None
) -> GenerationFailedError:
    """Classify a task that ended in state ``failed``.

    Content moderation and validation failures are not retryable (the same
    input would fail again and cost again); anything else is.
    """
    code = (fail_code or "").strip()
    text = (fail_msg or "").strip()
    terminal = code in _TERMINAL_FAIL_CODES or bool(_TERMINAL_FAIL_WORDS.search(text))
    kind = "refused (moderation or validation)" if terminal else "failed"
    status = int(code) if code.isdigit() else None
    return GenerationFailedError(
        f"the generation {kind}" + (f" with fail code {code}" if code else ""),
        fail_code=code or None,
        status_code=status,
        server_message=text or None,
        flux_task_id=flux_task_id,
        retryable=not terminal,
    )
