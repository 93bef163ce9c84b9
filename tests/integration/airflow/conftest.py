"""The shared fixtures live in ``tests/conftest.py``; this re-export keeps older imports working."""

from __future__ import annotations

from tests.conftest import API_KEY

__all__ = ["API_KEY"]
