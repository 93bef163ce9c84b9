"""Wait for a generation submitted outside Airflow, then use its result.

Another system (a web app, a notebook) submitted a FLUX.2 [max] task and
passes its id in the run's conf. ``FluxTaskSensor`` waits for it, deferred in
the triggerer; it succeeds with the same result dict as the operator and fails
the same way (retryable or not) if the generation failed.

Connection: ``flux_default`` (type ``flux``). Param: ``flux_task_id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param, task

from flux_provider.sensors import FluxTaskSensor

with DAG(
    dag_id="flux_sensor_external_task",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={"flux_task_id": Param("", type="string")},
) as dag:
    wait = FluxTaskSensor(
        task_id="wait_for_generation",
        flux_task_id="{{ params.flux_task_id }}",
        deferrable=True,
    )

    @task
    def report(result: dict[str, Any]) -> list[str]:
        """Pass the result URLs on."""
        print(f"flux task {result['flux_task_id']} made {result['result_urls']}")
        return list(result["result_urls"])

    report(wait.output)
