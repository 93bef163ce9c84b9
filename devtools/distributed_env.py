"""What every process of a distributed test Airflow is started with.

:func:`~devtools.airflow_env.airflow_env`'s shared environment (isolated from the
caller, loopback only, no scheduled runs), with PostgreSQL as the metadata database, the
CeleryExecutor with a Redis broker and its results in PostgreSQL, one Fernet key for every
process, and triggerer and heartbeat timings short enough for fault tests.

With SQLAlchemy 2.1 a bare ``postgresql://`` picks psycopg 3, so every URL names ``+psycopg2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .airflow_env import AirflowPlaces, airflow_env

__all__ = ["DistributedSettings", "distributed_env"]


@dataclass(frozen=True)
class DistributedSettings:
    """The parts of a distributed Airflow's configuration a test chooses.

    Args:
        database_url: SQLAlchemy URL of the metadata database (``postgresql+psycopg2://...``).
        broker_url: Celery broker (``redis://...``).
        fernet_key: ``[core] fernet_key``: trigger kwargs and connections are encrypted with it.
        parallelism: ``[core] parallelism``: task instances running at once, all workers together.
        worker_concurrency: ``[celery] worker_concurrency``.
        triggerer_heartbeat: ``[triggerer] job_heartbeat_sec``.
        triggerer_health_check_threshold: ``[triggerer] triggerer_health_check_threshold``: a
            triggerer silent this long is dead and its triggers go to another.
        triggerer_capacity: ``[triggerer] capacity``: triggers one triggerer runs at once.
        task_instance_heartbeat_timeout: ``[scheduler] task_instance_heartbeat_timeout``: a
            running task whose worker has been silent this long fails (or retries).
    """

    database_url: str
    broker_url: str
    fernet_key: str
    parallelism: int
    worker_concurrency: int
    triggerer_heartbeat: float = 2.0
    triggerer_health_check_threshold: float = 10.0
    triggerer_capacity: int = 1000
    task_instance_heartbeat_timeout: float = 20.0


def distributed_env(places: AirflowPlaces, settings: DistributedSettings) -> dict[str, str]:
    """The environment of every process of the distributed Airflow described by ``places``."""
    return airflow_env(
        places,
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.database_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(settings.parallelism),
            "AIRFLOW__CORE__FERNET_KEY": settings.fernet_key,
            "AIRFLOW__CELERY__BROKER_URL": settings.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{settings.database_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.worker_concurrency),
            # Sending a workload to the broker may take longer than the default 1 s on a
            # loaded machine; the executor then fails the task instead of queueing it.
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": _number(settings.triggerer_heartbeat),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": _number(
                settings.triggerer_health_check_threshold
            ),
            "AIRFLOW__TRIGGERER__CAPACITY": str(settings.triggerer_capacity),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": _number(
                settings.task_instance_heartbeat_timeout
            ),
        },
    )


def _number(value: float) -> str:
    """``2.0`` as ``"2"``: Airflow reads some of these settings with ``getint``."""
    return str(int(value)) if float(value).is_integer() else str(value)
