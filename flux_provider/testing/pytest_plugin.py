"""pytest plugin providing the ``flux_fake_server`` fixture.

Enable it in a ``conftest.py`` with ``pytest_plugins = ["flux_provider.testing.pytest_plugin"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import FakeFluxServer

__all__ = ["flux_fake_server"]


@pytest.fixture
def flux_fake_server() -> Iterator[FakeFluxServer]:
    """A started :class:`FakeFluxServer` (key ``"fake-key"``, tasks lasting 0.2 s).

    The server is stopped when the test ends.
    """
    with FakeFluxServer(api_key="fake-key", duration=0.2) as server:
        yield server
