"""The operator's opt-in credit checks: ``min_balance`` and ``max_credits``, before submitting."""

from __future__ import annotations

import math
from typing import Any

from flux_provider.api.errors import CreditLimitError, NotFoundError
from flux_provider.api.formatting import credits_text
from flux_provider.api.models import Flux2MaxInput
from flux_provider.hooks import FluxHook


def check_credit_limit(name: str, value: float | None) -> None:
    """Reject a limit that is not a finite number of credits ``>= 0`` (when the DAG is parsed)."""
    if value is not None and not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        raise ValueError(f"{name} must be a number of credits >= 0 (or None), got {value!r}")


def check_credits(
    hook: FluxHook,
    flux_input: Flux2MaxInput,
    *,
    model: str,
    min_balance: float | None,
    max_credits: float | None,
    log: Any,
) -> None:
    """Check the balance and the estimate against the limits that are set.

    At most one balance call and one estimate call, none for a limit left unset; ``log`` is
    the task's logger.

    Raises:
        CreditLimitError: The balance is below ``min_balance``, the estimate above
            ``max_credits``, or the service has no estimate endpoint while ``max_credits`` is
            set. Not retryable: the same try would fail the same way.
    """
    if min_balance is not None:
        balance = hook.get_balance()
        if balance < min_balance:
            raise CreditLimitError(
                f"the account has {credits_text(balance)} credits, below "
                f"min_balance={credits_text(min_balance)}: "
                "not submitting"
            )
        log.info(
            "Balance %s credits (min_balance %s)", credits_text(balance), credits_text(min_balance)
        )
    if max_credits is not None:
        try:
            cost = hook.estimate_credits(flux_input, model=model)
        except NotFoundError as error:
            config = hook.config
            raise CreditLimitError(
                f"max_credits={credits_text(max_credits)} is set, but {config.base_url} has no "
                f"estimate-credits endpoint at {config.estimate_path} (404): the cost cannot "
                "be checked, so nothing was submitted. Unset max_credits, or set the "
                "connection's estimate_path",
                server_message=error.server_message,
            ) from None
        if cost > max_credits:
            raise CreditLimitError(
                f"the task would cost {credits_text(cost)} credits, above "
                f"max_credits={credits_text(max_credits)}: "
                "not submitting"
            )
        log.info(
            "Estimated cost %s credits (max_credits %s)",
            credits_text(cost),
            credits_text(max_credits),
        )
