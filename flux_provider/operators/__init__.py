"""Operators: :class:`FluxGenerateImageOperator` (one generation) and
:class:`FluxGenerateImageBatchOperator` (many in one task, bound by the API)."""

from __future__ import annotations

from flux_provider.operators.batch import FluxGenerateImageBatchOperator
from flux_provider.operators.generate import FluxGenerateImageOperator

__all__ = ["FluxGenerateImageBatchOperator", "FluxGenerateImageOperator"]
