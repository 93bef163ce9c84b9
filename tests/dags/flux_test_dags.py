"""DAGs used by the test suite: one deferrable and one worker-polling generation, with retries.

Their behaviour is scripted through the fake API (faults, failing tasks), so the
DAGs themselves stay fixed. They live in a DAGs folder because ``dag.test()``
runs only DAGs it can serialise from there.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from flux_provider.operators import FluxGenerateImageOperator

for deferrable in (True, False):
    with DAG(
        dag_id=f"flux_test_{'deferred' if deferrable else 'worker'}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        default_args={"retries": 2, "retry_delay": timedelta(seconds=0)},
    ) as dag:
        FluxGenerateImageOperator(
            task_id="generate",
            prompt="a watercolour fox",
            poll_interval=0.05,
            timeout=60,
            deferrable=deferrable,
        )
    globals()[dag.dag_id] = dag
