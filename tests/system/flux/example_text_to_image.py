"""System test: one FLUX.2 [max] generation from text, its image copied to storage and checked.

Against the real API when ``FLUX_API_KEY`` is set, else against the fake (see
``tests/system/system_tests.py``). Costs one 1K generation.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param

from flux_provider.operators import FluxGenerateImageOperator
from tests.system.flux.checks import check_stored_image

DAG_ID = "example_flux_text_to_image"
OUTPUT_DIR = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_system_tests"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["flux", "system"],
    params={"output_dir": Param(str(OUTPUT_DIR), type="string")},
) as dag:
    generate = FluxGenerateImageOperator(
        task_id="generate",
        prompt="A studio photo of a ceramic teapot on linen, soft daylight",
        aspect_ratio="1:1",
        resolution="1K",
        seed=20260101,
        deferrable=True,
        download_to="{{ params.output_dir }}",
    )
    # Airflow types a @task call with the function's own parameters; at parse time an XComArg
    # stands for the value it will pull.
    check_stored_image(generate.output)  # type: ignore[arg-type]


from tests.system.system_tests import get_test_run  # noqa: E402

# Runs the DAG under pytest (see tests/system/system_tests.py).
test_run = get_test_run(dag)
