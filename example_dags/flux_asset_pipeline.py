"""Asset-driven: a generation produces an asset; a second DAG consumes it.

``flux_asset_producer`` generates a banner and declares the asset
``flux://banners/homepage`` as its outlet; on success the operator attaches the
flux task id, the result URLs and the stored file locations to the asset
event's ``extra``. ``flux_asset_consumer`` is scheduled on that asset and reads
the extra to learn what was made (here it just logs and returns it; in real
life it would publish the banner).

Connection: ``flux_default`` (type ``flux``).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Param, task

from flux_provider.operators import FluxGenerateImageOperator

# Images go under the Airflow home unless the run says otherwise: an absolute folder a user
# can find, whatever directory the worker happens to start in.
OUTPUT_ROOT = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_output"

HOMEPAGE_BANNER = Asset("flux://banners/homepage")

with DAG(
    dag_id="flux_asset_producer",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={"output_dir": Param(str(OUTPUT_ROOT / "banners"), type="string")},
) as producer:
    FluxGenerateImageOperator(
        task_id="generate_banner",
        prompt="A wide homepage banner of a winter sale, snow and warm lights",
        aspect_ratio="21:9",
        deferrable=True,
        download_to="{{ params.output_dir }}",
        outlets=[HOMEPAGE_BANNER],
    )

with DAG(
    dag_id="flux_asset_consumer",
    schedule=[HOMEPAGE_BANNER],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
) as consumer:

    @task
    def publish_banner(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """Read what the producer made from the triggering asset events."""
        made = []
        # Not ``(events or {}).get(asset)``: Airflow 3.1 cannot hash an Asset.
        events = triggering_asset_events.get(HOMEPAGE_BANNER, []) if triggering_asset_events else []
        for event in events:
            made.append(dict(event.extra))
            print(f"new banner from flux task {event.extra.get('flux_task_id')}")
        return made

    publish_banner()
