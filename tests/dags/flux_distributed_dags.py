"""Batches for the distributed scenarios (``tests/e2e/distributed``).

``flux_batch_deferred`` and ``flux_batch_worker`` generate one image per prompt of a batch of
``params.count`` prompts as mapped tasks, deferring to the triggerers or polling on the Celery
worker, and store each under ``params.output_dir``. ``flux_batch_one_task`` does the same as one
``FluxGenerateImageBatchOperator`` task (``batch``) run by a trigger: at most
``BATCH_IN_FLIGHT`` generating, one failed item allowed, and a balance check before it defers
(one call a scenario can hold the worker in). Tries retry quickly (a killed worker's try fails
after the scheduler's heartbeat timeout, and the retry re-attaches).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from flux_provider.operators import FluxGenerateImageBatchOperator, FluxGenerateImageOperator

BATCH_IN_FLIGHT = 8
"""``flux_batch_one_task``'s ``max_in_flight``."""


def _prompts(context: Any) -> list[str]:
    """``params.count`` catalogue prompts."""
    count = int(context["params"]["count"])
    return [f"Catalogue item {index}: a ceramic bowl, studio light" for index in range(count)]


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        params={
            "count": Param(20, type="integer", minimum=1, maximum=1000),
            "output_dir": Param("/tmp/flux-batch", type="string"),
        },
        default_args={"retries": 3, "retry_delay": timedelta(seconds=2)},
        max_active_tasks=64,
    )


def _batch(dag_id: str, *, deferrable: bool) -> DAG:
    with _dag(dag_id) as dag:

        @task
        def prompts(**context: Any) -> list[str]:
            """``params.count`` catalogue prompts."""
            return _prompts(context)

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


with _dag("flux_batch_one_task") as flux_batch_one_task:

    @task
    def batch_prompts(**context: Any) -> list[str]:
        """``params.count`` catalogue prompts."""
        return _prompts(context)

    FluxGenerateImageBatchOperator(
        task_id="batch",
        prompts=batch_prompts(),  # type: ignore[arg-type]  # the list, at run time
        aspect_ratio="4:3",
        max_in_flight=BATCH_IN_FLIGHT,
        allowed_failures=1,
        min_balance=1,
        deferrable=True,
        timeout=1800,
        download_to="{{ params.output_dir }}",
    )
