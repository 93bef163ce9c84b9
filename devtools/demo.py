"""``python -m devtools.demo``: one real Airflow run of the text-to-image example DAG.

Without ``FLUX_API_KEY`` it starts the embedded fake API on 127.0.0.1 and
points ``flux_default`` at it; with ``FLUX_API_KEY`` (and optionally
``FLUX_BASE_URL``) it uses the real API. The DAG runs through ``dag.test()``:
the operator submits, defers, the trigger polls, the worker resumes and copies
the images to ``./output/``. The paths and the outcome are printed at the end,
with the address of the run's FLUX images tab for ``python -m devtools.demo_ui``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devtools.dags import load_dag
from flux_provider.api.config import DEFAULT_BASE_URL
from flux_provider.api.formatting import bytes_text
from flux_provider.api.results import GenerationResult
from flux_provider.testing import FakeFluxServer

DAG_ID = "flux_text_to_image"
UI_PORT = int(os.environ.get("FLUX_DEMO_UI_PORT", "8080"))
"""Where ``make demo-ui`` serves Airflow's UI (``FLUX_DEMO_UI_PORT``)."""


def demo_home(root: Path) -> Path:
    """The demo's ``AIRFLOW_HOME``: its SQLite database, settings and logs."""
    return root / ".airflow"


def airflow_environment(home: Path, dags: Path) -> dict[str, str]:
    """The Airflow settings the demo and its UI share."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }


def tab_url(dag_id: str, run_id: str, task_id: str) -> str:
    """The FLUX images tab of a task instance in the UI that ``make demo-ui`` serves."""
    return (
        f"http://127.0.0.1:{UI_PORT}/dags/{dag_id}/runs/{quote(run_id, safe='')}"
        f"/tasks/{task_id}/plugin/flux_images"
    )


def _connection(stack: ExitStack) -> tuple[dict[str, Any], str]:
    key = os.environ.get("FLUX_API_KEY", "").strip()
    if key:
        base_url = os.environ.get("FLUX_BASE_URL", DEFAULT_BASE_URL)
        return {
            "conn_type": "flux",
            "host": base_url,
            "password": key,
        }, f"the real API at {base_url}"
    server = stack.enter_context(FakeFluxServer(api_key="demo-key", duration=4.0))
    return json.loads(
        server.airflow_connection_json()
    ), f"the embedded fake API at {server.base_url}"


def _prepare_airflow(home: Path, dags: Path, connection: dict[str, Any]) -> None:
    os.environ.update(
        {**airflow_environment(home, dags), "AIRFLOW_CONN_FLUX_DEFAULT": json.dumps(connection)}
    )
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )


def main() -> int:
    """Run the demo; returns the process exit status."""
    root = Path.cwd()
    dags = Path(os.environ.get("FLUX_DEMO_DAGS", root / "example_dags")).resolve()
    output = (root / "output").resolve()
    with ExitStack() as stack:
        connection, where = _connection(stack)
        print(f"flux demo: using {where}", flush=True)
        _prepare_airflow(demo_home(root), dags, connection)
        run = load_dag(DAG_ID, dags).test(run_conf={"output_dir": str(output)})
        (ti,) = run.get_task_instances()
        value = ti.xcom_pull(task_ids=ti.task_id)
    print()
    print(f"flux demo: DAG run {run.run_id} ended {run.state}; task {ti.task_id} {ti.state}")
    if value is None:
        return 1
    result = GenerationResult.from_xcom(value)
    print(f"flux demo: flux task {result.flux_task_id} -> {result.task.state.value}")
    for stored in result.stored or ():
        print(f"flux demo: wrote {stored.location} ({bytes_text(stored.bytes)})")
    print(
        "flux demo: to see it in Airflow's UI, run `make demo-ui` and open "
        f"{tab_url(DAG_ID, run.run_id, ti.task_id)}"
    )
    return 0 if run.state == "success" and result.stored else 1


if __name__ == "__main__":
    sys.exit(main())
