"""A mapped batch: one generation per prompt in a file, throttled to respect the rate limit.

``load_prompts`` reads ``data/catalogue_prompts.txt`` beside this file (one
prompt per line); the operator is mapped over them with ``.expand``. Two
limits keep the API's rate limit and the credits in check:
``max_active_tis_per_dag`` bounds how many generations are in flight at once
(deferred ones included), and the ``flux_api`` pool bounds them across every DAG
when it counts deferred tasks (create it with
``airflow pools set flux_api 4 "FLUX API" --include-deferred``). Deferred tasks
hold no worker slot while they wait, so a batch of hundreds costs the
triggerer, not the workers. Each mapped
task re-attaches on retry, so a retry never pays twice.

Connection: ``flux_default`` (type ``flux``). Pool: ``flux_api``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, task

from flux_provider.operators import FluxGenerateImageOperator

# Images go under the Airflow home unless the run says otherwise: an absolute folder a user
# can find, whatever directory the worker happens to start in.
OUTPUT_ROOT = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_output"

PROMPTS_FILE = Path(__file__).resolve().parent / "data" / "catalogue_prompts.txt"

with DAG(
    dag_id="flux_mapped_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={"output_dir": Param(str(OUTPUT_ROOT / "batch"), type="string")},
    default_args={"retries": 3, "retry_delay": timedelta(seconds=30)},
) as dag:

    @task
    def load_prompts() -> list[str]:
        """One prompt per non-empty line of the prompts file."""
        lines = PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]

    FluxGenerateImageOperator.partial(
        task_id="generate",
        aspect_ratio="4:3",
        resolution="1K",
        deferrable=True,
        pool="flux_api",
        max_active_tis_per_dag=4,
        download_to="{{ params.output_dir }}",
    ).expand(prompt=load_prompts())
