"""Hooks: :class:`FluxHook`, an Airflow connection of type ``flux`` turned into the API client."""

from __future__ import annotations

from flux_provider.hooks.flux import FluxHook

__all__ = ["FluxHook"]
