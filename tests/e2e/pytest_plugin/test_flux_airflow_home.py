"""The pytest plugin's ``flux_airflow_home``, in a user's project run by a pytest of its own.

Each test lays out the README's project (its ``conftest.py`` and test, verbatim), runs
``python -m pytest`` there in a user's environment whose ``HOME`` is a temporary folder, and
then looks at what was left behind: the user's ``~/airflow`` must never get a database.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.user_project import users_shell, write_project

pytestmark = pytest.mark.timeout(600)

# The session's home as the tests inside see it, written where the outer test can read it.
CHECK_HOME = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from airflow import configuration, settings


    def test_airflow_uses_the_fixture_home(flux_airflow_home):
        assert Path(configuration.AIRFLOW_HOME) == flux_airflow_home
        assert os.environ["AIRFLOW_HOME"] == str(flux_airflow_home)
        assert settings.SQL_ALCHEMY_CONN.endswith(str(flux_airflow_home / "airflow.db"))
        assert (flux_airflow_home / "airflow.db").is_file()
        Path(os.environ["HOME_RECORD"]).write_text(str(flux_airflow_home))
    """
)


def _pytest(project: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA"],
        cwd=project,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


@pytest.fixture
def user_home(tmp_path: Path) -> Path:
    home = tmp_path / "user-home"
    home.mkdir()
    return home


def test_the_readme_test_runs_in_a_throwaway_home_deleted_afterwards(
    tmp_path: Path, user_home: Path
) -> None:
    project = write_project(tmp_path / "project", dags_folder="workflows")
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nflux_dags_folder = "workflows"\n'
    )
    (project / "tests" / "test_home.py").write_text(CHECK_HOME)
    record = tmp_path / "home.txt"
    env = users_shell(user_home)
    # As Airflow's quick start has users export it: their real home, which tests must not use.
    env["AIRFLOW_HOME"] = str(user_home / "airflow")
    env["HOME_RECORD"] = str(record)

    done = _pytest(project, env)

    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout
    session_home = Path(record.read_text())
    assert session_home.is_relative_to(tempfile.gettempdir())
    assert not session_home.exists()  # deleted when pytest ended
    assert not (user_home / "airflow").exists()
    assert [image.suffix for image in (project / "output").iterdir()] == [".png"]


def test_a_home_the_user_set_is_migrated_and_kept(tmp_path: Path, user_home: Path) -> None:
    project = write_project(tmp_path / "project")
    (project / "tests" / "test_home.py").write_text(CHECK_HOME)
    record = tmp_path / "home.txt"
    own_home = tmp_path / "own-airflow-home"
    env = users_shell(user_home)
    env.update(
        {
            "AIRFLOW_HOME": str(own_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The plugin changes nothing for a user who chose a home: importing the DAG by its
            # module name is then theirs to arrange.
            "PYTHONPATH": str(project / "dags"),
            "HOME_RECORD": str(record),
        }
    )

    done = _pytest(project, env)

    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout
    assert Path(record.read_text()) == own_home
    assert (own_home / "airflow.db").is_file()
    assert not (user_home / "airflow").exists()


def test_airflow_imported_before_the_plugin_fails_the_fixture_and_migrates_nothing(
    tmp_path: Path, user_home: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(
        'import airflow\n\npytest_plugins = ["flux_provider.testing.pytest_plugin"]\n'
    )
    (project / "test_home.py").write_text("def test_home(flux_airflow_home):\n    pass\n")

    done = _pytest(project, users_shell(user_home))

    assert done.returncode == 1, done.stdout[-5000:]
    assert "ERROR at setup of test_home" in done.stdout
    assert "Airflow was imported before the plugin was enabled" in done.stdout
    assert "which flux_airflow_home never migrates" in done.stdout
    assert "PytestConfigWarning: Airflow was imported before" in done.stdout
    assert not (user_home / "airflow" / "airflow.db").exists()
