"""A real distributed Airflow (CeleryExecutor, PostgreSQL, Redis) against the fake API.

These tests need Debian's ``postgresql`` and ``redis-server`` and the ``distributed`` extra
(``make distributed-deps``); ``make test`` does not run them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.distributed import DistributedAirflow
from flux_provider.testing import FakeFluxServer
from tests.conftest import API_KEY, DAGS_FOLDER

# Seconds a fake generation takes unless a test completes it: longer than any test waits.
FAKE_DURATION = 3600.0


def distributed_airflow(home: Path, fake: FakeFluxServer, **options: Any) -> DistributedAirflow:
    """A (not yet started) distributed Airflow in ``home`` whose ``flux_default`` is ``fake``.

    Its DAGs folder holds the example DAGs and the test DAGs; ``options`` go to
    :class:`DistributedAirflow` (``extra_env`` is added to the connection).
    """
    env = {"AIRFLOW_CONN_FLUX_DEFAULT": fake.airflow_connection_json()}
    env.update(options.pop("extra_env", {}))
    return DistributedAirflow(home=home, dags_folder=DAGS_FOLDER, extra_env=env, **options)


@pytest.fixture(scope="module")
def fake_flux() -> Iterator[FakeFluxServer]:
    """The fake API for the module's Airflow."""
    with FakeFluxServer(api_key=API_KEY, duration=FAKE_DURATION) as server:
        yield server


@pytest.fixture(scope="module")
def distributed(
    tmp_path_factory: pytest.TempPathFactory, fake_flux: FakeFluxServer
) -> Iterator[DistributedAirflow]:
    """One started distributed Airflow for the module, stopped after its last test."""
    airflow = distributed_airflow(tmp_path_factory.mktemp("distributed-airflow-home"), fake_flux)
    with airflow:
        yield airflow


REPORT: list[str] = []
"""Figures the scenarios measured, printed at the end of the session."""


def report(line: str) -> None:
    """Add ``line`` to what the session prints at its end (and print it now)."""
    REPORT.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the distributed scenarios measured."""
    if REPORT:
        terminalreporter.section("distributed scenarios: what was measured")
        for line in REPORT:
            terminalreporter.write_line(line)
