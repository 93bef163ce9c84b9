"""Genuine results for the images plugin's attack tests (``tests/integration/plugins``).

``flux_images_targets`` stores one image per task. ``genuine``, ``neighbour``, ``symlinked``
and ``planted`` share ``params.output_dir`` (templated from the run's conf, as the example
DAGs do); ``bucket`` stores into an object store given as an ``ObjectStoragePath``
(``memory://``, which the tests attach before they run the DAG).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, ObjectStoragePath, Param

from flux_provider.operators import FluxGenerateImageOperator

BUCKET_FOLDER = "memory://flux-bucket-a/out"

with DAG(
    dag_id="flux_images_targets",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    params={"output_dir": Param("/tmp/flux-images-targets", type="string")},
) as dag:
    for task_id in ("genuine", "neighbour", "symlinked", "planted"):
        FluxGenerateImageOperator(
            task_id=task_id,
            prompt=f"A {task_id} teapot",
            download_to="{{ params.output_dir }}",
        )
    FluxGenerateImageOperator(
        task_id="bucket",
        prompt="A teapot in a bucket",
        download_to=ObjectStoragePath(BUCKET_FOLDER),
    )
