"""TaskFlow: a Python function writes each request, ``@task.flux_image`` generates it.

``product_shot`` builds the prompt and framing of one catalogue item from its record; mapped
over the records with ``.expand()``, each record becomes one generation (deferred, re-attached
on retry, stored under ``output_dir``). ``catalogue`` does the same for every record in one
task with ``@task.flux_image_batch``, bound by the API's limit rather than by worker slots.

Connection: ``flux_default`` (type ``flux``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

OUTPUT_ROOT = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_output"

RECORDS = [
    {
        "sku": "chair-1042",
        "name": "linen armchair",
        "room": "a sunlit reading corner",
        "ratio": "16:9",
    },
    {"sku": "lamp-0077", "name": "brass floor lamp", "room": "a dark study", "ratio": "9:16"},
    {"sku": "rug-0311", "name": "wool kilim rug", "room": "a white loft", "ratio": "1:1"},
]

with DAG(
    dag_id="flux_taskflow",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={"output_dir": Param(str(OUTPUT_ROOT / "taskflow"), type="string")},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:

    @task.flux_image(
        resolution="1K",
        deferrable=True,
        download_to="{{ params.output_dir }}/single",
    )
    def product_shot(record: dict[str, Any]) -> dict[str, Any]:
        """One generation per record: the prompt, its framing, and a seed stable per SKU."""
        return {
            "prompt": f"A {record['name']} in {record['room']}, catalogue photo",
            "aspect_ratio": record["ratio"],
            "seed": sum(map(ord, record["sku"])),
        }

    @task.flux_image_batch(
        aspect_ratio="1:1",
        max_in_flight=8,
        deferrable=True,
        download_to="{{ params.output_dir }}/batch",
    )
    def catalogue(records: list[dict[str, Any]]) -> list[str]:
        """Every record in one task."""
        return [f"A {record['name']}, studio photo on white" for record in records]

    product_shot.expand(record=RECORDS)
    catalogue(RECORDS)
