"""The public models (:mod:`flux_provider.api.models`), where earlier releases kept them."""

from __future__ import annotations

from flux_provider.api.models import (
    MODEL_NAME,
    Flux2MaxInput,
    TaskInfo,
    TaskState,
    validate_input,
)

__all__ = ["MODEL_NAME", "Flux2MaxInput", "TaskInfo", "TaskState", "validate_input"]
