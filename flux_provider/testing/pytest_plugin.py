"""pytest plugin: the ``flux_fake_server`` and ``flux_airflow_home`` fixtures.

Enable it in the ``conftest.py`` at the root of your tests with
``pytest_plugins = ["flux_provider.testing.pytest_plugin"]`` (or ``-p
flux_provider.testing.pytest_plugin``), before anything there imports Airflow.

Airflow reads ``AIRFLOW_HOME`` and its settings once, when ``airflow`` is first imported, which
happens while pytest collects your test modules (your DAG imports Airflow), before any fixture
runs. So the plugin's ``pytest_configure``, which runs as soon as the plugin is enabled, points
the environment at a throwaway home, unless you chose one yourself:

* When none of ``AIRFLOW_HOME`` (other than Airflow's default ``~/airflow``), ``AIRFLOW_CONFIG``
  and ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` (or its ``_CMD``/``_SECRET`` forms) is set and
  Airflow is not imported yet, it creates an empty temporary folder and sets ``AIRFLOW_HOME``
  to it, ``sql_alchemy_conn`` to a SQLite file in it, and, unless set,
  ``AIRFLOW__CORE__LOAD_EXAMPLES=False`` and ``AIRFLOW__CORE__DAGS_FOLDER`` to the
  ``flux_dags_folder`` ini option (default ``dags``, relative to pytest's rootdir): ``dag.test()``
  runs only DAGs it finds in the DAGs folder. The DAGs folder is put on ``sys.path`` so tests
  can ``import my_dag``. All of it is undone, and the folder deleted, when pytest ends.
* Otherwise it changes nothing, and ``flux_airflow_home`` migrates the database you configured.

Nothing migrates or writes to the database of ``~/airflow``: ``flux_airflow_home`` fails
instead when Airflow ended up there (Airflow imported before the plugin was enabled).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from .airflow_home import PreparedHome, airflow_in_use, migrate, prepare, user_setting
from .server import FakeFluxServer

__all__ = [
    "flux_airflow_home",
    "flux_fake_server",
    "pytest_addoption",
    "pytest_configure",
    "pytest_unconfigure",
]

_PREPARED = pytest.StashKey[PreparedHome]()
_LEFT_ALONE = pytest.StashKey[str]()
_DAGS_FOLDER_OPTION = "flux_dags_folder"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``flux_dags_folder`` ini option."""
    parser.addini(
        _DAGS_FOLDER_OPTION,
        "DAGs folder of the throwaway AIRFLOW_HOME, relative to the rootdir (default: dags)",
        default="dags",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Point Airflow at a throwaway home before the test modules import it (see above)."""
    setting = user_setting(os.environ)
    if setting is not None:
        config.stash[_LEFT_ALONE] = f"{setting} is set"
        return
    configuration = sys.modules.get("airflow.configuration")
    if configuration is not None:
        config.stash[_LEFT_ALONE] = "Airflow was imported before the plugin was enabled"
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(
                "Airflow was imported before flux_provider.testing.pytest_plugin was enabled, "
                f"so it keeps the home it found ({configuration.AIRFLOW_HOME}): enable the plugin "
                "in your root conftest.py before anything imports Airflow"
            ),
            stacklevel=2,
        )
        return
    dags_folder = config.rootpath / str(config.getini(_DAGS_FOLDER_OPTION))
    config.stash[_PREPARED] = prepare(os.environ, dags_folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the environment and delete the throwaway home."""
    prepared = config.stash.get(_PREPARED, None)
    if prepared is not None:
        prepared.restore(os.environ)


@pytest.fixture(scope="session")
def flux_airflow_home(pytestconfig: pytest.Config) -> Path:
    """The ``AIRFLOW_HOME`` of this session, its database migrated once (``airflow db migrate``).

    The throwaway home the plugin prepared, or, if you set ``AIRFLOW_HOME`` or a database
    yourself, yours (its database is migrated as ``airflow db migrate`` would). Request it from
    any test that runs ``dag.test()``. Fails, touching nothing, when Airflow uses the database
    of ``~/airflow``.
    """
    airflow = airflow_in_use()
    prepared = pytestconfig.stash.get(_PREPARED, None)
    if prepared is None and airflow.is_default_home_database:
        why = pytestconfig.stash.get(_LEFT_ALONE, "")
        pytest.fail(
            f"Airflow uses the database of {airflow.home} ({why}), which flux_airflow_home never "
            "migrates. Enable flux_provider.testing.pytest_plugin in your root conftest.py "
            "before anything imports Airflow, or set AIRFLOW_HOME to a folder for tests.",
            pytrace=False,
        )
    if prepared is not None and not prepared.dags_folder.is_dir():
        warnings.warn(
            f"the DAGs folder {prepared.dags_folder} does not exist: dag.test() runs only DAGs "
            f"it finds there (set the {_DAGS_FOLDER_OPTION} ini option)",
            stacklevel=1,
        )
    migrate(airflow, os.environ)
    return airflow.home


@pytest.fixture
def flux_fake_server() -> Iterator[FakeFluxServer]:
    """A started :class:`FakeFluxServer` (key ``"fake-key"``, tasks lasting 0.2 s).

    The server is stopped when the test ends.
    """
    with FakeFluxServer(api_key="fake-key", duration=0.2) as server:
        yield server
