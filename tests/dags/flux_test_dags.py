"""DAGs used by the test suite; their behaviour is scripted through the fake API.

They live in a DAGs folder because ``dag.test()`` runs only DAGs it can
serialise from there. Every DAG has one generation task ``generate`` with
retries (no delay), so a test can watch Airflow's own retries:

- ``flux_test_deferred`` / ``flux_test_worker``: deferrable / polling on the worker;
- ``flux_test_short_timeout``: deferrable with a 1 s wait, for timeouts;
- ``flux_test_execution_timeout``: deferrable, a long wait but a 2 s ``execution_timeout``
  and no retries;
- ``flux_test_reuse``: ``reuse=True``, prompt, seed and folder from the run's conf;
- ``flux_test_dies_after_submit_deferred`` / ``..._worker``: the first try dies
  right after the task was submitted and recorded (a worker lost mid-task).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from flux_provider.api.models import TaskInfo
from flux_provider.operators import FluxGenerateImageOperator


class DiesAfterSubmit(FluxGenerateImageOperator):
    """Fails its first try between submitting and waiting, like a worker killed there."""

    def wait_for_result(
        self, context: Any, flux_task_id: str, info: TaskInfo | None = None
    ) -> dict[str, Any]:
        if context["ti"].try_number == 1:
            raise RuntimeError(f"simulated worker death after submitting {flux_task_id}")
        return super().wait_for_result(context, flux_task_id, info)


def _dag(
    dag_id: str, operator: type[FluxGenerateImageOperator], retries: int = 2, **options: Any
) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        default_args={"retries": retries, "retry_delay": timedelta(seconds=0)},
    ) as dag:
        operator(task_id="generate", prompt="a watercolour fox", poll_interval=0.05, **options)
    return dag


flux_test_deferred = _dag(
    "flux_test_deferred", FluxGenerateImageOperator, deferrable=True, timeout=60
)
flux_test_worker = _dag("flux_test_worker", FluxGenerateImageOperator, deferrable=False, timeout=60)
flux_test_short_timeout = _dag(
    "flux_test_short_timeout", FluxGenerateImageOperator, deferrable=True, timeout=1
)
flux_test_dies_after_submit_deferred = _dag(
    "flux_test_dies_after_submit_deferred", DiesAfterSubmit, deferrable=True, timeout=60
)
flux_test_dies_after_submit_worker = _dag(
    "flux_test_dies_after_submit_worker", DiesAfterSubmit, deferrable=False, timeout=60
)
flux_test_execution_timeout = _dag(
    "flux_test_execution_timeout",
    FluxGenerateImageOperator,
    retries=0,
    deferrable=True,
    timeout=600,
    execution_timeout=timedelta(seconds=2),
)


with DAG(
    dag_id="flux_test_reuse",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    default_args={"retries": 0},
) as flux_test_reuse:
    FluxGenerateImageOperator(
        task_id="generate",
        prompt="{{ dag_run.conf['prompt'] }}",
        extra_input={"seed": "{{ dag_run.conf['seed'] }}"},
        deferrable=True,
        poll_interval=0.05,
        reuse=True,
        download_to="{{ dag_run.conf['out'] }}",
    )
