"""``WaitSettings``: the one place wait settings are checked and a wait's deadline begins."""

from __future__ import annotations

import math

import pytest

from flux_provider.api.config import DEFAULT_WAIT_TIMEOUT
from flux_provider.api.polling import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    PollSchedule,
    WaitSettings,
)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1.5}, "poll_interval"),
        ({"poll_interval": math.inf}, "poll_interval"),
        ({"poll_interval": math.nan}, "poll_interval"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -3}, "timeout"),
        ({"timeout": math.nan}, "timeout"),
        ({"max_consecutive_errors": -1}, "max_consecutive_errors"),
    ],
)
def test_each_bad_setting_is_refused_naming_it(options: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        WaitSettings(**options)  # type: ignore[arg-type]


def test_the_defaults() -> None:
    settings = WaitSettings()
    assert settings.timeout == DEFAULT_WAIT_TIMEOUT
    assert settings.max_consecutive_errors == DEFAULT_MAX_CONSECUTIVE_ERRORS
    assert settings.schedule == PollSchedule()


def test_a_fixed_interval_is_a_fixed_schedule() -> None:
    assert WaitSettings(poll_interval=7).schedule == PollSchedule.fixed(7)


def test_a_wait_starts_with_its_deadline_timeout_from_now() -> None:
    wait = WaitSettings(poll_interval=3, timeout=60, max_consecutive_errors=2).start(
        "task_1", clock=lambda: 1_000.0
    )
    assert (wait.flux_task_id, wait.deadline, wait.deadline_name) == ("task_1", 1_060.0, "timeout")
    assert wait.schedule == PollSchedule.fixed(3)
    assert wait.max_consecutive_errors == 2
    assert wait.started == 1_000.0


def test_a_given_deadline_and_its_name_win() -> None:
    wait = WaitSettings(timeout=60).start(
        "task_1", clock=lambda: 1_000.0, deadline=1_010.0, deadline_name="execution_timeout"
    )
    assert (wait.deadline, wait.deadline_name) == (1_010.0, "execution_timeout")


def test_an_open_ended_wait() -> None:
    assert WaitSettings().start("task_1", deadline=math.inf).deadline == math.inf
