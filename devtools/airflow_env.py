"""The environment every process of a test Airflow shares, whatever its database and executor.

* The inherited environment is stripped of every ``AIRFLOW*`` variable, so the instance does not
  see the caller's home, database or connections; pass what it needs in ``extra_env`` (applied
  last: it may override any default chosen here).
* The API server listens on ``127.0.0.1`` on a free port; the execution API URL (used by task
  supervisors) points at it. One JWT secret and one API secret key serve every process, so a
  token minted by one is accepted by another.
* Scheduled (cron) runs are off (``[scheduler] use_job_schedule = False``) so that unpausing a DAG
  does not add a run the test did not ask for; manually triggered runs work as usual.
* The simple auth manager makes everyone an admin (the REST API wants only a token from
  ``/auth/token``), unless the instance has ``credentials``: then one admin signs in with them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["AirflowPlaces", "airflow_env"]


class AirflowPlaces(Protocol):
    """Where a test Airflow lives and listens."""

    home: Path
    dags_folder: Path
    api_port: int
    worker_log_port: int
    trigger_log_port: int
    extra_env: dict[str, str]
    credentials: tuple[str, str] | None

    @property
    def passwords_file(self) -> Path:
        """Where the simple auth manager's passwords are (with ``credentials``)."""

    @property
    def airflow_bin(self) -> Path:
        """The real ``airflow`` console script."""


def airflow_env(
    places: AirflowPlaces,
    settings: Mapping[str, str],
    *,
    path_first: Sequence[Path] = (),
) -> dict[str, str]:
    """The environment of every process of the Airflow described by ``places``.

    Args:
        places: Home, DAGs folder, ports and the caller's ``extra_env``.
        settings: What this kind of instance adds (database, executor, sizes); applied after
            the shared defaults and before ``extra_env``.
        path_first: Folders put first on ``PATH`` (before the ``airflow`` script's own).
    """
    home = places.home
    api_url = f"http://127.0.0.1:{places.api_port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.pop("FORCE_COLOR", None)
    path = [*map(str, path_first), str(places.airflow_bin.parent), env.get("PATH", os.defpath)]
    env.update(
        {
            "PATH": os.pathsep.join(path),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(places.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(places.api_port),
            "AIRFLOW__API__BASE_URL": f"{api_url}/",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(places.worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(places.trigger_log_port),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # A task supervisor whose task process closed its pipes but has not exited yet
            # waits this long in select() before it notices (default 5 s): under load that
            # keeps an executor slot busy for 5 s after a task deferred or ended.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # A cold API server under load answers its first execution API call in ~7 s,
            # over the default 5 s timeout (a retry absorbs it, but it need not come to that).
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        }
    )
    if places.credentials is not None:
        env.update(
            {
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{places.credentials[0]}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(places.passwords_file),
            }
        )
    env.update(settings)
    env.update(places.extra_env)
    return env
