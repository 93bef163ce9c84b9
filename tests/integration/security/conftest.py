"""Fixtures of the security tests: a hostile server registered as connection ``flux_hostile``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.security.hostile import HostileServer
from tests.support.security import HOSTILE_CONN_ID, KEY


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    """A started :class:`HostileServer` with no routes yet."""
    with HostileServer() as server:
        yield server


@pytest.fixture
def hostile_conn(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> HostileServer:
    """The hostile server as connection ``flux_hostile`` (password :data:`KEY`)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{HOSTILE_CONN_ID.upper()}", hostile.connection_json(KEY))
    return hostile
