"""Extra links: :class:`FluxResultLink`, the "FLUX result" button on a task's page."""

from __future__ import annotations

from flux_provider.links.result import FluxResultLink, persist_result_link

__all__ = ["FluxResultLink", "persist_result_link"]
