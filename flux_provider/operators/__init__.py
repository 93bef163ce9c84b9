"""Operators: :class:`FluxGenerateImageOperator` (one generation)."""

from __future__ import annotations

from flux_provider.operators.generate import FluxGenerateImageOperator

__all__ = ["FluxGenerateImageOperator"]
