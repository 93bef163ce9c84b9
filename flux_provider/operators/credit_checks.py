"""The operators' opt-in credit checks: ``min_balance`` and ``max_credits``, before submitting."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from flux_provider.api.errors import CreditLimitError, NotFoundError
from flux_provider.api.formatting import count_text, credits_text
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


def _cost_groups(inputs: Sequence[Flux2MaxInput]) -> list[tuple[Flux2MaxInput, int]]:
    """Inputs that cost the same, as (one of them, how many): everything but the prompt, the
    seed and the reference images themselves (their number counts) decides the price."""
    groups: dict[str, tuple[Flux2MaxInput, int]] = {}
    for flux_input in inputs:
        shape = flux_input.parameters()
        for varying in ("prompt", "seed"):
            shape.pop(varying, None)
        shape["input_urls"] = len(shape.get("input_urls") or ())
        key = json.dumps(shape, sort_keys=True)
        first, count = groups.get(key, (flux_input, 0))
        groups[key] = (first, count + 1)
    return list(groups.values())


def _estimate(hook: FluxHook, inputs: Sequence[Flux2MaxInput], model: str, limit: float) -> float:
    """What ``inputs`` would cost: one estimate call per group of equally priced inputs."""
    try:
        return sum(
            hook.estimate_credits(first, model=model) * count
            for first, count in _cost_groups(inputs)
        )
    except NotFoundError as error:
        config = hook.config
        raise CreditLimitError(
            f"max_credits={credits_text(limit)} is set, but {config.base_url} has no "
            f"estimate-credits endpoint at {config.estimate_path} (404): the cost cannot "
            "be checked, so nothing was submitted. Unset max_credits, or set the "
            "connection's estimate_path",
            server_message=error.server_message,
        ) from None


def check_credits(
    hook: FluxHook,
    inputs: Sequence[Flux2MaxInput],
    *,
    model: str,
    min_balance: float | None,
    max_credits: float | None,
    log: Any,
) -> None:
    """Check the balance and the estimate of ``inputs`` (one task's, or a batch's still to
    submit) against the limits that are set.

    At most one balance call, and one estimate call per group of equally priced inputs (one for
    a single task); none for a limit left unset. ``log`` is the task's logger.

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
    if max_credits is not None and inputs:
        cost = _estimate(hook, inputs, model, max_credits)
        what = "the task" if len(inputs) == 1 else f"the {count_text(len(inputs), 'item')}"
        if cost > max_credits:
            raise CreditLimitError(
                f"{what} would cost {credits_text(cost)} credits, above "
                f"max_credits={credits_text(max_credits)}: "
                "not submitting"
            )
        log.info(
            "Estimated cost %s credits (max_credits %s)",
            credits_text(cost),
            credits_text(max_credits),
        )
