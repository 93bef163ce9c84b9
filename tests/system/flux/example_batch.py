"""System test: a batch of three FLUX.2 [max] generations in one task, each image stored and
checked.

Against the real API when ``FLUX_API_KEY`` is set, else against the fake (see
``tests/system/system_tests.py``). Costs three 1K generations; at most two run at once.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param

from flux_provider.operators import FluxGenerateImageBatchOperator
from tests.system.flux.checks import check_stored_batch

DAG_ID = "example_flux_batch"
OUTPUT_DIR = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_system_tests"
PROMPTS = [
    "A linen armchair in a sunlit reading corner, catalogue photo",
    "A walnut side table with a brass lamp, catalogue photo",
    "A wool throw folded on a leather ottoman, catalogue photo",
]

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["flux", "system"],
    params={"output_dir": Param(str(OUTPUT_DIR), type="string")},
) as dag:
    catalogue = FluxGenerateImageBatchOperator(
        task_id="catalogue",
        prompts=PROMPTS,
        aspect_ratio="4:3",
        resolution="1K",
        seed=20260101,
        max_in_flight=2,
        deferrable=True,
        download_to="{{ params.output_dir }}",
    )
    # Airflow types a @task call with the function's own parameters; at parse time an XComArg
    # stands for the value it will pull.
    check_stored_batch(catalogue.output, len(PROMPTS))  # type: ignore[arg-type]


from tests.system.system_tests import get_test_run  # noqa: E402

# Runs the DAG under pytest (see tests/system/system_tests.py).
test_run = get_test_run(dag)
