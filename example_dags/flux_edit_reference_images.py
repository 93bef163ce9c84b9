"""Edit uploaded photos: reference images from an upstream task, restyled by FLUX.2 [max].

An upstream task decides which photos to restyle (here a fixed list; in real
life a query against the product catalogue) and returns their URLs. The
operator takes them as ``input_urls`` straight from that task's XCom, and the
prompt is templated from the run's params. The edited images are copied to
``output_dir``.

Connection: ``flux_default`` (type ``flux``). Params: ``style`` (the look to
apply), ``output_dir`` (a local path or an object-storage URL).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param, task

from flux_provider.operators import FluxGenerateImageOperator

# Images go under the Airflow home unless the run says otherwise: an absolute folder a user
# can find, whatever directory the worker happens to start in.
OUTPUT_ROOT = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_output"

with DAG(
    dag_id="flux_edit_reference_images",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={
        "style": Param("warm autumn light, soft shadows", type="string"),
        "output_dir": Param(str(OUTPUT_ROOT / "edits"), type="string"),
    },
) as dag:

    @task
    def pick_photos() -> list[str]:
        """The uploaded photos to restyle (at most 8 per generation)."""
        return [
            "https://images.example.com/uploads/sku-1042-front.jpg",
            "https://images.example.com/uploads/sku-1042-side.jpg",
        ]

    FluxGenerateImageOperator(
        task_id="restyle_product_photos",
        prompt="Restyle the product photos with {{ params.style }}; keep the product unchanged",
        input_urls=pick_photos(),
        aspect_ratio="match_input_image",
        deferrable=True,
        download_to="{{ params.output_dir }}",
    )
