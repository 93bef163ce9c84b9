"""Test-session environment: a private AIRFLOW_HOME with a migrated SQLite database.

The variables are set here, before any test module imports Airflow, so every
Airflow import in the session sees the same home, DAGs folder and settings.

Tests are laid out by kind, and each kind is a marker given by its folder (``pytest -m unit``):

* ``tests/unit``: no server and no Airflow database, seconds in all;
* ``tests/integration``: real loopback servers (the fake API, hostile peers) and Airflow in this
  process (``dag.test()``, the API server's app);
* ``tests/e2e``: Airflow as separate processes (``airflow standalone``, the distributed set-up,
  a browser, the built wheel in a fresh venv);
* ``tests/system``: the example DAGs against the real API when ``FLUX_API_KEY`` is set, against
  the fake otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from devtools import dags
from devtools.standalone import StandaloneAirflow
from flux_provider.testing import FakeFluxProcess, FakeFluxServer

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
KINDS = ("unit", "integration", "e2e", "system")
"""The test kinds, each a folder of ``tests/`` and a marker."""

# Suites that need an extra the plain dev environment lacks are collected only where it is
# installed (their make targets install it, then name the folder: an empty run fails there).
collect_ignore_glob = [
    folder
    for folder, module in (("e2e/browser", "playwright"), ("e2e/distributed", "celery"))
    if importlib.util.find_spec(module) is None
]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="flux-airflow-home-"))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
# dag.test() runs only DAGs it can serialise from the DAGs folder: the examples, the test DAGs
# and the system tests' DAGs.
for source in [
    *(REPO / "example_dags").glob("*.py"),
    *(REPO / "tests" / "dags").glob("*.py"),
    *(REPO / "tests" / "system").glob("*/example_*.py"),
]:
    (DAGS_FOLDER / source.name).symlink_to(source)

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)


def migrate_database() -> None:
    """Create the metadata tables (seconds on SQLite); done once per session."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        timeout=300,
        env=os.environ.copy(),
    )


def load_dag(dag_id: str) -> Any:
    """The DAG ``dag_id`` from the session's DAGs folder."""
    return dags.load_dag(dag_id, DAGS_FOLDER)


API_KEY = "sk-flux-test-7f3a9c2e-DO-NOT-LEAK"


@contextlib.contextmanager
def standalone_airflow(
    home: Path,
    fake: FakeFluxServer,
    extra_env: Mapping[str, str] | None = None,
    credentials: tuple[str, str] | None = None,
) -> Iterator[StandaloneAirflow]:
    """``airflow standalone`` in ``home`` running the example DAGs against ``fake``.

    ``fake`` is the ``flux_default`` connection; ``extra_env`` adds to the environment;
    ``credentials`` make its one admin sign in.
    """
    env = {"AIRFLOW_CONN_FLUX_DEFAULT": fake.airflow_connection_json(), **(extra_env or {})}
    with StandaloneAirflow(
        home=home, dags_folder=REPO / "example_dags", extra_env=env, credentials=credentials
    ) as airflow:
        yield airflow


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
    with FakeFluxProcess(api_key=API_KEY, duration=0.5) as fake:
        monkeypatch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", fake.airflow_connection_json())
        yield fake.base_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its kind, the first folder under ``tests/``."""
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        if parts and parts[0] in KINDS:
            item.add_marker(parts[0])
