"""Fixtures for tests of real Airflow code: a migrated DB, the fake API as ``flux_default``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from flux_provider.testing import FakeFluxServer
from tests.conftest import migrate_database

API_KEY = "sk-flux-test-7f3a9c2e-DO-NOT-LEAK"


@pytest.fixture(scope="session")
def airflow_db() -> None:
    migrate_database()


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFluxServer]:
    """The fake API, registered as the ``flux_default`` connection through the environment."""
    with FakeFluxServer(api_key=API_KEY, duration=0.5) as server:
        monkeypatch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", server.airflow_connection_json())
        yield server


@pytest.fixture
def fake_api_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The fake API in a process of its own (no GIL shared with the code under test)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flux_provider.testing", "--api-key", API_KEY, "--duration", "0.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.rsplit(" ", 1)[-1].strip()
        assert base_url.startswith("http://127.0.0.1:"), line
        connection = {"conn_type": "flux", "host": base_url, "password": API_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", json.dumps(connection))
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)
