"""Triggers: :class:`FluxTaskTrigger` polls one FLUX task in the triggerer;
:class:`FluxBatchTrigger` runs a batch there.

:mod:`~flux_provider.triggers.events` is the format of what a trigger sends back to its task.
"""

from __future__ import annotations

from flux_provider.triggers.batch import FluxBatchTrigger
from flux_provider.triggers.task import FluxTaskTrigger

__all__ = ["FluxBatchTrigger", "FluxTaskTrigger"]
