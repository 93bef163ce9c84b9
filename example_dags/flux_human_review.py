"""Generate, let a person approve, publish: a FLUX image reaches its final place only if approved.

``generate`` renders the image into a review folder. ``review`` (Airflow's
``ApprovalOperator``: Airflow 3.1+, standard provider 1.12.2+) asks for a decision in the UI's
Required Actions, with the image and what made it in the form's body (through the FLUX images
plugin, so the reviewer's own access to this DAG decides whether they see it), and waits up to
two days for it. On **Approve**, ``publish`` copies the
image to the publish folder; on **Reject**, the operator skips ``publish`` and nothing is
published. Answer in the UI, or through the REST API::

    PATCH /api/v2/dags/flux_human_review/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails
    {"chosen_options": ["Approve"], "params_input": {}}

Connection: ``flux_default`` (type ``flux``).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, task

from flux_provider.api.results import GenerationResult
from flux_provider.hooks.storage import storage_path
from flux_provider.operators import FluxGenerateImageOperator
from flux_provider.plugins.review import review_body
from flux_provider.plugins.stored import stored_file

OUTPUT_ROOT = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_output"

with DAG(
    dag_id="flux_human_review",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["flux", "example"],
    params={
        "prompt": Param(
            "A hand-thrown stoneware mug on a walnut shelf, morning light", type="string"
        ),
        "review_dir": Param(str(OUTPUT_ROOT / "review"), type="string"),
        "publish_dir": Param(str(OUTPUT_ROOT / "published"), type="string"),
    },
    user_defined_macros={"flux_review_body": review_body},
) as dag:
    generate = FluxGenerateImageOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        aspect_ratio="1:1",
        deferrable=True,
        download_to="{{ params.review_dir }}",
    )

    review = ApprovalOperator(
        task_id="review",
        subject="Publish this FLUX image?",
        body=(
            "{{ flux_review_body(ti.xcom_pull(task_ids='generate'), dag.dag_id, run_id, "
            "'generate') }}"
        ),
        response_timeout=timedelta(days=2),
    )

    @task
    def publish(result: dict[str, Any], review_dir: str, publish_dir: str) -> list[str]:
        """Copy the approved images to ``publish_dir`` (any object storage path).

        Only files the generate task wrote into ``review_dir`` are copied: the result comes
        from XCom, which a user allowed to edit XComs could point at any other file.
        """
        result_value = GenerationResult.from_xcom(result)
        target = storage_path(publish_dir)
        target.mkdir(parents=True, exist_ok=True)
        published = []
        for index, image in enumerate(result_value.stored or ()):
            source = stored_file(review_dir, result_value.flux_task_id, index, image.location)
            destination = target / source.name
            with source.open("rb") as reader, destination.open("wb") as writer:
                shutil.copyfileobj(reader, writer)
            published.append(str(destination))
        return published

    review >> publish(generate.output, "{{ params.review_dir }}", "{{ params.publish_dir }}")
    generate >> review
