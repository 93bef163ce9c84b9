"""System test: a FLUX.2 [max] edit of a reference image, its result copied to storage and checked.

The reference goes as a ``data:image/png;base64,`` URI, which the real API and the fake both
accept (the fake, never fetching, takes any http(s) URL too; the real API needs public ones).
Against the real API when ``FLUX_API_KEY`` is set, else against the fake (see
``tests/system/system_tests.py``). Costs one 1K generation.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param

from flux_provider.operators import FluxGenerateImageOperator
from tests.system.flux.checks import check_stored_image

DAG_ID = "example_flux_edit"
OUTPUT_DIR = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "flux_system_tests"
# The picture make demo writes (diagonal stripes), 18 KiB: small enough to send inline.
REFERENCE = Path(__file__).resolve().parents[3] / "example_dags" / "data" / "demo_output.png"


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["flux", "system"],
    params={"output_dir": Param(str(OUTPUT_DIR), type="string")},
) as dag:
    edit = FluxGenerateImageOperator(
        task_id="edit",
        prompt="Turn the diagonal stripes into knitted wool, keeping their colours and angle",
        input_urls=[data_uri(REFERENCE)],
        aspect_ratio="match_input_image",
        resolution="1K",
        seed=20260101,
        deferrable=True,
        download_to="{{ params.output_dir }}",
    )
    # Airflow types a @task call with the function's own parameters; at parse time an XComArg
    # stands for the value it will pull.
    check_stored_image(edit.output)  # type: ignore[arg-type]


from tests.system.system_tests import get_test_run  # noqa: E402

# Runs the DAG under pytest (see tests/system/system_tests.py).
test_run = get_test_run(dag)
