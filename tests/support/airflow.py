"""Helpers shared by the Airflow-layer tests."""

from __future__ import annotations

import time
from typing import Any

from flux_provider.triggers import FluxTaskTrigger

CONN_FIELDS = {
    "header_name",
    "create_path",
    "info_path",
    "balance_path",
    "estimate_path",
    "timeout",
    "allow_insecure_http",
}
"""The connection form's Flux fields, on every Airflow version."""


def flux_trigger(
    flux_task_id: str, *, wait: float = 30, poll_interval: float = 0.05, **overrides: Any
) -> FluxTaskTrigger:
    """A trigger for ``flux_task_id`` on ``flux_default`` that gives up after ``wait`` seconds."""
    options: dict[str, Any] = {
        "deadline": time.time() + wait,
        "poll_interval": poll_interval,
        "max_consecutive_errors": 3,
        **overrides,
    }
    return FluxTaskTrigger(flux_task_id, "flux_default", **options)
