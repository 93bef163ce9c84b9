"""Mapped batches for the distributed scenarios (``tests/e2e/distributed``).

``flux_batch_deferred`` and ``flux_batch_worker`` generate one image per prompt of a batch of
``params.count`` prompts, deferring to the triggerers or polling on the Celery worker, and store
each under ``params.output_dir``. Tries retry quickly (a killed worker's try fails after the
scheduler's heartbeat timeout, and the retry re-attaches).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from flux_provider.operators import FluxGenerateImageOperator


def _batch(dag_id: str, *, deferrable: bool) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        params={
            "count": Param(20, type="integer", minimum=1, maximum=1000),
            "output_dir": Param("/tmp/flux-batch", type="string"),
        },
        default_args={"retries": 3, "retry_delay": timedelta(seconds=2)},
        max_active_tasks=64,
    ) as dag:

        @task
        def prompts(**context: Any) -> list[str]:
            """``params.count`` catalogue prompts."""
            count = int(context["params"]["count"])
            return [
                f"Catalogue item {index}: a ceramic bowl, studio light" for index in range(count)
            ]

        FluxGenerateImageOperator.partial(
            task_id="generate",
            aspect_ratio="4:3",
            deferrable=deferrable,
            timeout=1800,
            download_to="{{ params.output_dir }}",
        ).expand(prompt=prompts())
    return dag


flux_batch_deferred = _batch("flux_batch_deferred", deferrable=True)
flux_batch_worker = _batch("flux_batch_worker", deferrable=False)
