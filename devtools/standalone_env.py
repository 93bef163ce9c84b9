"""What a standalone Airflow is started with: its environment and the ``airflow`` shim.

The environment is :func:`~devtools.airflow_env.airflow_env`'s (isolated from the
caller, loopback only, no scheduled runs) with a SQLite database and the LocalExecutor.

The scheduler's and triggerer's log servers always bind every interface (Airflow has no host
setting for them), so by default they are not started at all: a shim ``airflow`` script put
first on ``PATH`` adds ``--skip-serve-logs`` when standalone spawns ``airflow scheduler`` /
``airflow triggerer``. The API server reads task and trigger logs from the shared local log
folder, so nothing is lost. ``serve_logs=True`` starts them anyway, on free ports.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Protocol

from .airflow_env import AirflowPlaces, airflow_env

__all__ = ["StandalonePlaces", "standalone_env", "write_serve_logs_shim"]


class StandalonePlaces(AirflowPlaces, Protocol):
    """Where a standalone Airflow lives and listens, and whether it serves logs.

    :class:`~devtools.standalone.StandaloneAirflow` is one.
    """

    serve_logs: bool


def standalone_env(places: StandalonePlaces) -> dict[str, str]:
    """The environment of every process of the standalone Airflow described by ``places``.

    SQLite in ``home/airflow.db`` and the LocalExecutor. Without ``serve_logs``, ``home/bin``
    comes first on ``PATH`` for the shim of :func:`write_serve_logs_shim`. ``extra_env`` is
    applied last.
    """
    home = places.home
    settings = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
    }
    shim = () if places.serve_logs else (home / "bin",)
    return airflow_env(places, settings, path_first=shim)


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
        "# Written by devtools.standalone: the log servers bind every interface.\n"
        'case "$1" in\n'
        f'  scheduler|triggerer) exec {real} "$@" --skip-serve-logs ;;\n'
        "esac\n"
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
