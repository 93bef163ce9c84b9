"""Text to image, every night: one deferrable FLUX.2 [max] generation, copied to storage.

Shows the operator's default shape: the prompt is templated with the date the
run is for (``run_after``, which every run has), the task defers to the
triggerer while the image renders (no worker slot held), and the image is
copied to ``download_to`` before its URL expires. The result (task id, image
URLs, stored files with size and SHA-256) lands in XCom.

Connection: ``flux_default`` (type ``flux``: password = API key, host = API
base URL). ``make demo`` points it at the embedded fake API.
Param ``output_dir``: where the images go (a local path or any object-storage URL;
by default ``$AIRFLOW_HOME/flux_output``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param

from flux_provider.operators import FluxGenerateImageOperator

# Images go under the Airflow home unless the run says otherwise: an absolute folder a user
# can find, whatever directory the worker happens to start in.
OUTPUT_ROOT = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_output"

with DAG(
    dag_id="flux_text_to_image",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={"output_dir": Param(str(OUTPUT_ROOT), type="string")},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:
    FluxGenerateImageOperator(
        task_id="generate_hero_image",
        # run_after exists for every run; a run triggered through the REST API may have no
        # logical date, and then {{ ds }} is undefined.
        prompt="A studio photo of a ceramic teapot on linen, catalogue style, "
        "{{ dag_run.run_after | ds }}",
        aspect_ratio="16:9",
        resolution="1K",
        seed=20260101,
        deferrable=True,
        download_to="{{ params.output_dir }}",
    )
