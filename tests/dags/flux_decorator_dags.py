"""TaskFlow DAGs for the test suite: each function notes every call in ``dag_run.conf["calls"]``.

- ``flux_decorator_test_single``: ``@task.flux_image``, deferred, its function returns a mapping
  with an extra field;
- ``flux_decorator_test_bad``: its function returns a number.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task


def _note(calls: str, what: str) -> None:
    with Path(calls).open("a", encoding="utf-8") as log:
        log.write(what + "\n")


with DAG(
    dag_id="flux_decorator_test_single",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args={"retries": 2, "retry_delay": timedelta(seconds=0)},
) as flux_decorator_test_single:

    @task.flux_image(
        aspect_ratio="16:9",
        deferrable=True,
        poll_interval=0.05,
        download_to="{{ dag_run.conf['out'] }}",
    )
    def shot(sku: str, dag_run: Any = None) -> dict[str, Any]:
        _note(dag_run.conf["calls"], sku)
        return {"prompt": f"product {sku}, studio photo", "seed": 7, "safety_tolerance": 2}

    shot.expand(sku=["a-1", "b-2"])


with DAG(
    dag_id="flux_decorator_test_bad",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args={"retries": 2, "retry_delay": timedelta(seconds=0)},
) as flux_decorator_test_bad:

    @task.flux_image(deferrable=True, poll_interval=0.05)
    def not_a_prompt() -> int:
        return 42

    not_a_prompt()
