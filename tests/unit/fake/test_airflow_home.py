"""The pytest plugin's choice of an Airflow home, and the throwaway home it prepares."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flux_provider.testing.airflow_home import (
    AIRFLOW_DEFAULT_HOME,
    MARKER_VARIABLE,
    AirflowInUse,
    prepare,
    user_setting,
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"AIRFLOW__CORE__LOAD_EXAMPLES": "True", "AIRFLOW__CORE__DAGS_FOLDER": "/x"}, None),
        ({"AIRFLOW_HOME": "/srv/airflow"}, "AIRFLOW_HOME"),
        ({"AIRFLOW_HOME": ""}, None),
        ({"AIRFLOW_HOME": "~/airflow"}, None),  # Airflow's default: a real home, not a test's
        ({"AIRFLOW_HOME": str(AIRFLOW_DEFAULT_HOME)}, None),
        ({"AIRFLOW_CONFIG": "/etc/airflow.cfg"}, "AIRFLOW_CONFIG"),
        (
            {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://db/a"},
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        ),
        (
            {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "cat url"},
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD",
        ),
    ],
)
def test_what_counts_as_the_users_own_airflow(env: dict[str, str], expected: str | None) -> None:
    assert user_setting(env) == expected


def test_a_home_prepared_by_an_enclosing_session_is_not_the_users(tmp_path: Path) -> None:
    outer: dict[str, str] = {}
    prepared = prepare(outer, tmp_path / "dags")
    try:
        inner = dict(outer)  # what a pytest-xdist worker or a nested pytest inherits

        assert user_setting(inner) is None
        inner["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "postgresql://db/a"
        assert user_setting(inner) == "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
        inner = {**outer, "AIRFLOW_HOME": "/srv/airflow"}  # the marker no longer names the home
        assert user_setting(inner) == "AIRFLOW_HOME"
    finally:
        prepared.restore(outer)


def test_prepare_points_airflow_at_a_new_home_and_restore_undoes_it(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    env = {"AIRFLOW_HOME": str(AIRFLOW_DEFAULT_HOME), "PATH": "/bin"}

    prepared = prepare(env, dags)
    seen = dict(env)
    on_path = str(dags) in sys.path
    prepared.restore(env)

    assert prepared.path.name.startswith("flux-test-airflow-home-")
    assert seen == {
        "AIRFLOW_HOME": str(prepared.path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{prepared.path / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        MARKER_VARIABLE: str(prepared.path),
        "PATH": "/bin",
    }
    assert on_path
    assert env == {"AIRFLOW_HOME": str(AIRFLOW_DEFAULT_HOME), "PATH": "/bin"}
    assert str(dags) not in sys.path
    assert not prepared.path.exists()


def test_prepare_keeps_the_users_dags_folder_and_examples_setting(tmp_path: Path) -> None:
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "mine"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "1",
    }

    prepared = prepare(env, tmp_path / "dags")
    seen = dict(env)
    prepared.restore(env)

    assert prepared.dags_folder == tmp_path / "mine"
    assert seen["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "mine")
    assert seen["AIRFLOW__CORE__LOAD_EXAMPLES"] == "1"
    assert env == {
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "mine"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "1",
    }


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        (f"sqlite:///{AIRFLOW_DEFAULT_HOME / 'airflow.db'}", True),
        ("sqlite:///~/airflow/airflow.db", True),
        ("sqlite:////tmp/elsewhere/airflow.db", False),
        ("postgresql://localhost/airflow", False),
    ],
)
def test_the_default_homes_database_is_recognised(database_url: str, expected: bool) -> None:
    assert AirflowInUse(AIRFLOW_DEFAULT_HOME, database_url).is_default_home_database is expected
