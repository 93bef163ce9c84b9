"""Sensors: :class:`FluxTaskSensor` waits for a FLUX task submitted elsewhere."""

from __future__ import annotations

from flux_provider.sensors.task import FluxTaskSensor

__all__ = ["FluxTaskSensor"]
