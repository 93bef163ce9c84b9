"""The fake account: its credit balance, what tasks cost, and refunds of failed tasks."""

from __future__ import annotations

import math
from collections.abc import Mapping

from .tasks import TaskRecord

__all__ = ["DEFAULT_BALANCE", "DEFAULT_CREDITS_PER_IMAGE", "Account", "InsufficientCreditsError"]

DEFAULT_CREDITS_PER_IMAGE = 6.0
"""Credits one 1K image costs unless configured otherwise (2K costs double)."""

DEFAULT_BALANCE = 1_000_000.0
"""The account's starting balance unless configured otherwise."""


class InsufficientCreditsError(Exception):
    """The balance cannot pay for a task (the API answers 402)."""


def checked_credits(name: str, credits: float) -> float:
    """``credits`` as a float, if it is a finite number >= 0.

    Raises:
        ValueError: Naming ``name`` otherwise.
    """
    if not math.isfinite(credits) or credits < 0:
        raise ValueError(f"{name} must be a finite number of credits >= 0, got {credits}")
    return float(credits)


class Account:
    """Balance and pending refunds; the server guards it with its lock.

    A failing task is refunded when it ends, which happens on the server's clock rather than
    at a call: :meth:`settle` gives back what has come due and is called before the balance
    is read or charged.
    """

    def __init__(self, *, balance: float, credits_per_image: float) -> None:
        """Open an account holding ``balance`` credits."""
        self.credits_per_image = checked_credits("credits_per_image", credits_per_image)
        self._balance = checked_credits("balance", balance)
        self._refunds_due: dict[str, TaskRecord] = {}

    def cost(self, input: Mapping[str, object]) -> float:
        """Credits a task with ``input`` costs: the per-image price, doubled at 2K."""
        resolution = input.get("resolution")
        if isinstance(resolution, str) and resolution.strip().upper() == "2K":
            return self.credits_per_image * 2
        return self.credits_per_image

    def balance(self, now: float) -> float:
        """Credits left at clock time ``now``."""
        self.settle(now)
        return self._balance

    def set_balance(self, credits: float, now: float) -> None:
        """Make the balance ``credits`` (refunds of tasks still running stay due)."""
        checked = checked_credits("balance", credits)
        self.settle(now)
        self._balance = checked

    def charge(self, cost: float, now: float) -> None:
        """Take ``cost`` from the balance.

        Raises:
            InsufficientCreditsError: If the balance is lower (nothing is taken).
        """
        if self.balance(now) < cost:
            raise InsufficientCreditsError
        self._balance -= cost

    def refund_if_failed(self, record: TaskRecord) -> None:
        """Give ``record.cost`` back once the task has ended, if it ended ``failed``."""
        self._refunds_due[record.flux_task_id] = record

    def settle(self, now: float) -> None:
        """Refund every watched task that has failed by ``now``; forget those that succeeded."""
        for task_id, record in list(self._refunds_due.items()):
            ended = record.terminal(now)
            if ended is None:
                continue
            del self._refunds_due[task_id]
            if ended.ending.status == "failed":
                self._balance += record.cost
