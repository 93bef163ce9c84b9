"""What a standalone Airflow is started with: its environment and the ``airflow`` shim.

* The inherited environment is stripped of every ``AIRFLOW*`` variable, so the instance does not
  see the pytest session's home, database or connections; pass what it needs in ``extra_env``
  (which is applied last and may override any default chosen here).
* The API server listens on ``127.0.0.1`` on a free port; the execution API URL (used by task
  supervisors) points at it. The scheduler's and triggerer's log servers always bind every
  interface (Airflow has no host setting for them), so by default they are not started at all:
  a shim ``airflow`` script put first on ``PATH`` adds ``--skip-serve-logs`` when standalone
  spawns ``airflow scheduler`` / ``airflow triggerer``. The API server reads task and trigger logs
  from the shared local log folder, so nothing is lost. ``serve_logs=True`` starts them anyway,
  on free ports.
* Scheduled (cron) runs are off (``[scheduler] use_job_schedule = False``) so that unpausing a DAG
  does not add a run the test did not ask for; manually triggered runs work as usual.
"""

from __future__ import annotations

import os
import secrets
import shlex
from pathlib import Path
from typing import Protocol

__all__ = ["StandalonePlaces", "standalone_env", "write_serve_logs_shim"]


class StandalonePlaces(Protocol):
    """Where a standalone Airflow lives and listens.

    :class:`~flux_provider.testing.standalone.StandaloneAirflow` is one.
    """

    home: Path
    dags_folder: Path
    api_port: int
    worker_log_port: int
    trigger_log_port: int
    serve_logs: bool
    extra_env: dict[str, str]

    @property
    def airflow_bin(self) -> Path:
        """The real ``airflow`` console script."""


def standalone_env(places: StandalonePlaces) -> dict[str, str]:
    """The environment of every process of the standalone Airflow described by ``places``.

    The API server listens on ``127.0.0.1:<api_port>``; the execution API URL points at it.
    Without ``serve_logs``, ``home/bin`` comes first on ``PATH`` for the shim of
    :func:`write_serve_logs_shim`. ``extra_env`` is applied last.
    """
    home = places.home
    api_url = f"http://127.0.0.1:{places.api_port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.pop("FORCE_COLOR", None)
    path = [str(places.airflow_bin.parent), env.get("PATH", os.defpath)]
    if not places.serve_logs:
        path.insert(0, str(home / "bin"))
    env.update(
        {
            "PATH": os.pathsep.join(path),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
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
            # One secret for every process: tokens minted by one are checked by another.
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
    env.update(places.extra_env)
    return env


def write_serve_logs_shim(home: Path, airflow_bin: Path) -> None:
    """Write ``home/bin/airflow``, which runs ``airflow_bin`` with ``--skip-serve-logs`` added.

    It adds the flag only to ``airflow scheduler`` and ``airflow triggerer``: their log servers
    bind every interface.
    """
    shim = home / "bin" / "airflow"
    shim.parent.mkdir(parents=True, exist_ok=True)
    real = shlex.quote(str(airflow_bin))
    shim.write_text(
        "#!/bin/sh\n"
        "# Written by flux_provider.testing.standalone: the log servers bind every interface.\n"
        'case "$1" in\n'
        f'  scheduler|triggerer) exec {real} "$@" --skip-serve-logs ;;\n'
        "esac\n"
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
