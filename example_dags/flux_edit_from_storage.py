"""Edit photos kept in storage: every image of a folder (``s3://``, ``gs://`` or local), restyled.

Edit pipelines keep their product photos in buckets, not on public URLs. ``list_photos`` lists
the images of ``photos`` (any Airflow object storage path: ``s3://bucket/uploads/sku-1042``
with the connection Airflow finds for it, or a local folder) and returns their locations; the
operator reads each one through Airflow's object storage, checks it is a PNG, JPEG, WebP or GIF
of at most 16 MiB and sends it as a ``data:`` URI, before anything is submitted (a missing or
bad file fails the task without charge, naming it). ``reuse=True``: a rerun with the same
photos, style and seed returns the stored result without paying again.

Connection: ``flux_default`` (type ``flux``). Params: ``photos`` (the folder of photos),
``style``, ``output_dir``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param, task

from flux_provider.hooks.storage import storage_path
from flux_provider.operators import FluxGenerateImageOperator

OUTPUT_ROOT = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_output"
SAMPLE_PHOTOS = Path(__file__).resolve().parent / "data"

with DAG(
    dag_id="flux_edit_from_storage",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={
        "photos": Param(str(SAMPLE_PHOTOS), type="string"),
        "style": Param("warm autumn light, soft shadows", type="string"),
        "output_dir": Param(str(OUTPUT_ROOT / "edits-from-storage"), type="string"),
    },
) as dag:

    @task
    def list_photos(photos: str) -> list[str]:
        """The folder's images (at most 8: one generation takes up to 8 references)."""
        found = sorted(
            str(path)
            for path in storage_path(photos).iterdir()
            if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif")
        )
        return found[:8]

    FluxGenerateImageOperator(
        task_id="restyle_stored_photos",
        prompt="Restyle the product photos with {{ params.style }}; keep the product unchanged",
        input_urls=list_photos("{{ params.photos }}"),
        aspect_ratio="match_input_image",
        seed=7,
        reuse=True,
        deferrable=True,
        download_to="{{ params.output_dir }}",
    )
