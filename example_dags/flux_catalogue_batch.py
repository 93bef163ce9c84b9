"""The nightly catalogue in one task: every prompt of a file, bound by the API, not by workers.

``load_prompts`` reads ``data/catalogue_prompts.txt`` beside this file (one prompt per line);
``FluxGenerateImageBatchOperator`` generates them all in one task instance. It keeps at most
``max_in_flight`` generations running (set it to your account's limit: above it the service
answers 429, which the batch waits out), stores each image as soon as it is ready, and records
every submitted task in a journal beside the images, so a retry, a dead worker or a restarted
triggerer never pays for an image twice. A few failed items are tolerated
(``allowed_failures``); more fail the task once the others are stored, and its retry submits
only the failed items a retry can help.

Connection: ``flux_default`` (type ``flux``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, task

from flux_provider.operators import FluxGenerateImageBatchOperator

# Images go under the Airflow home unless the run says otherwise: an absolute folder a user
# can find, whatever directory the worker happens to start in.
OUTPUT_ROOT = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_output"

PROMPTS_FILE = Path(__file__).resolve().parent / "data" / "catalogue_prompts.txt"

with DAG(
    dag_id="flux_catalogue_batch",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={"output_dir": Param(str(OUTPUT_ROOT / "catalogue"), type="string")},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:

    @task
    def load_prompts() -> list[str]:
        """One prompt per non-empty line of the prompts file."""
        lines = PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]

    FluxGenerateImageBatchOperator(
        task_id="generate_catalogue",
        prompts=load_prompts(),
        aspect_ratio="4:3",
        resolution="1K",
        max_in_flight=24,
        allowed_failures=2,
        deferrable=True,
        download_to="{{ params.output_dir }}/{{ dag_run.run_after | ds }}",
    )
