"""``python -m devtools.demo_ui`` (``make demo-ui``): Airflow's UI over the demo's runs.

It serves Airflow's API server, UI included, on ``127.0.0.1:8080`` (``FLUX_DEMO_UI_PORT``)
from the database ``make demo`` wrote, with every visitor an admin (loopback only, no login),
and prints the address of the FLUX images tab of the demo's latest run. The tab shows the
stored copy under ``./output/``; Ctrl-C stops the server.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

from devtools.demo import DAG_ID, UI_PORT, airflow_environment, demo_home, tab_url


def latest_run(home: Path) -> tuple[str, str] | None:
    """The run id and task id of the demo's latest successful run, if it made one."""
    database = home / "airflow.db"
    if not database.exists():
        return None
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT run_id, task_id FROM task_instance WHERE dag_id = ? AND state = 'success' "
            "ORDER BY end_date DESC LIMIT 1",
            (DAG_ID,),
        ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def main() -> int:
    """Serve the UI until interrupted; 1 when ``make demo`` has not run here yet."""
    root = Path.cwd()
    home = demo_home(root)
    found = latest_run(home)
    if found is None:
        print("flux demo-ui: no successful demo run here yet: run `make demo` first")
        return 1
    dags = Path(os.environ.get("FLUX_DEMO_DAGS", root / "example_dags")).resolve()
    env = {
        **os.environ,
        **airflow_environment(home, dags),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{UI_PORT}/",
    }
    print(f"flux demo-ui: open {tab_url(DAG_ID, *found)}", flush=True)
    print("flux demo-ui: the FLUX images tab is next to Logs; Ctrl-C stops the server", flush=True)
    airflow = str(Path(sys.executable).parent / "airflow")
    command = [airflow, "api-server", "--host", "127.0.0.1", "--port", str(UI_PORT)]
    os.execve(airflow, command, env)  # noqa: S606 - a fixed command, no shell


if __name__ == "__main__":
    sys.exit(main())
