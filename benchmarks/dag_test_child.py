"""Quick mode's ``dag.test()`` benchmarks (B3, B6) in one child process.

One fresh SQLite ``AIRFLOW_HOME``, one migration, one fake API process and one throwaway run
serve every benchmark selected, so ``make bench-quick`` pays that set-up once: ``dag.test()``
starts an in-process API server on first use (seconds), which is no operator's cost, so the
throwaway run comes before anything is measured. The parent bounds the child with a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.fake_process import FakeApiProcess
from benchmarks.measure import die_with_parent

NAMES = ("B3", "B6")
WARM_UP_DURATION = 0.5
B3_DURATION = 5.0
B6_IMAGES = 100
B6_DURATION = 5.0
TIMEOUT = 600.0


def airflow_env(env: dict[str, str], home: Path) -> dict[str, str]:
    """``env`` pointed at a private AIRFLOW_HOME with the benchmark DAGs and SQLite."""
    from benchmarks.worker_slot import DAGS_FOLDER

    return {
        **{k: v for k, v in env.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


def run_child(names: Sequence[str], workdir: Path) -> dict[str, dict[str, Any]]:
    """In the child (its environment from :func:`airflow_env`): migrate, warm up, measure."""
    from benchmarks import batch_operator, worker_slot

    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    results: dict[str, dict[str, Any]] = {}
    with FakeApiProcess(duration=WARM_UP_DURATION, log_path=workdir / "dag-test-fake.log") as fake:
        os.environ["AIRFLOW_CONN_FLUX_DEFAULT"] = fake.connection_json()
        warm_up = worker_slot.dag_test_timing(worker_slot.DAG_IDS["worker"])
        if "B3" in names:
            results["B3"] = worker_slot.run_dag_test(fake, B3_DURATION)
            results["B3"]["warm_up"] = asdict(warm_up)
        if "B6" in names:
            results["B6"] = batch_operator.run_dag_test(
                fake, count=B6_IMAGES, duration=B6_DURATION, output=workdir / "b6-images"
            )
    return results


def run(names: Sequence[str], *, env: dict[str, str], workdir: Path) -> dict[str, dict[str, Any]]:
    """Run the selected benchmarks in one child; each one's results.

    Raises:
        RuntimeError: The child failed (the tail of its log says why).
        subprocess.TimeoutExpired: It took longer than :data:`TIMEOUT`.
    """
    home = workdir / "dag-test-home"
    home.mkdir(parents=True, exist_ok=True)
    out = workdir / "dag-test.json"
    log = workdir / "dag-test.log"
    with log.open("w") as log_file:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.dag_test_child",
                *("--only", ",".join(names), "--out", str(out)),
            ],
            env=airflow_env(env, home),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT,
            preexec_fn=die_with_parent,
            check=False,
        )
    if completed.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(
            f"the dag.test() child exited {completed.returncode}:\n" + "\n".join(tail)
        )
    return dict(json.loads(out.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dag_test_child")
    parser.add_argument("--only", required=True, help="e.g. B3,B6")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    names = [name for name in args.only.split(",") if name in NAMES]
    result = run_child(names, args.out.parent)
    args.out.write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
