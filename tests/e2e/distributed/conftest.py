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
# The scenarios' set-up (tests/e2e/distributed/test_*scenarios.py).
HEALTH_CHECK_THRESHOLD = 10.0
HEARTBEAT_TIMEOUT = 20.0
WORKER_SLOTS = 8


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


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, fake_flux: FakeFluxServer
) -> Iterator[DistributedAirflow]:
    """The scenarios' distributed Airflow, one per module: a Celery worker of 8 slots,
    triggerers taken for dead after 10 s, tasks after 20 s without a heartbeat;
    ``flux_default`` is created in its database (encrypted) through the REST API, as a user adds
    one."""
    airflow = DistributedAirflow(
        home=tmp_path_factory.mktemp("scenarios-home"),
        dags_folder=DAGS_FOLDER,
        worker_concurrency=WORKER_SLOTS,
        triggerer_health_check_threshold=HEALTH_CHECK_THRESHOLD,
        task_instance_heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )
    with airflow:
        report(f"start-up: {airflow.startup_seconds:.1f} s")
        airflow.api(
            "POST",
            "/api/v2/connections",
            json={
                "connection_id": "flux_default",
                "conn_type": "flux",
                "host": fake_flux.base_url,
                "password": API_KEY,
            },
        )
        yield airflow


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """The folder a scenario's images go to."""
    return tmp_path / "images"


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
