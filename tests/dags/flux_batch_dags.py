"""Batch DAGs for the test suite; the run's conf gives the items and the folder.

Each has one task ``batch`` (retries with no delay) over ``dag_run.conf["prompts"]`` (or
``["inputs"]``), storing into ``dag_run.conf["out"]``; templates render as native objects, so
the conf's lists arrive as lists:

- ``flux_batch_test_deferred`` / ``flux_batch_test_worker``: in the triggerer / on the worker;
- ``flux_batch_test_inputs``: items as input mappings, with shared defaults;
- ``flux_batch_test_tolerant``: one failed item allowed; its asset event lists the images;
- ``flux_batch_test_dies_after_storing``: its first try dies after every image was stored
  (a worker lost as it resumed): the retry must re-attach to everything;
- ``flux_batch_test_credit_limit``: ``max_credits=10``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset

from flux_provider.operators import FluxGenerateImageBatchOperator


class DiesAfterStoring(FluxGenerateImageBatchOperator):
    """Fails its first try as it resumes, after the triggerer stored every image."""

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker death as the batch resumed")
        return super().execute_complete(context, event)


def _dag(
    dag_id: str,
    operator: type[FluxGenerateImageBatchOperator] = FluxGenerateImageBatchOperator,
    *,
    items: str = "prompts",
    retries: int = 2,
    **options: Any,
) -> DAG:
    # The items' parameter (prompts or requests), rendered from the run's conf.
    item_options: dict[str, Any] = {items: "{{ dag_run.conf['" + items + "'] }}"}
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        render_template_as_native_obj=True,
        default_args={"retries": retries, "retry_delay": timedelta(seconds=0)},
    ) as dag:
        operator(
            task_id="batch",
            download_to="{{ dag_run.conf['out'] }}",
            poll_interval=0.05,
            timeout=120,
            **item_options,
            **options,
        )
    return dag


flux_batch_test_deferred = _dag("flux_batch_test_deferred", deferrable=True, max_in_flight=3)
flux_batch_test_worker = _dag("flux_batch_test_worker", deferrable=False, max_in_flight=3)
flux_batch_test_inputs = _dag(
    "flux_batch_test_inputs", items="inputs", deferrable=True, aspect_ratio="16:9", seed=11
)
flux_batch_test_tolerant = _dag(
    "flux_batch_test_tolerant",
    deferrable=True,
    allowed_failures=1,
    outlets=[Asset("flux://batch/tolerant")],
)
flux_batch_test_dies_after_storing = _dag(
    "flux_batch_test_dies_after_storing", DiesAfterStoring, deferrable=True
)
flux_batch_test_credit_limit = _dag(
    "flux_batch_test_credit_limit", deferrable=True, max_credits=10, retries=0
)
