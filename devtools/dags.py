"""Load a DAG object from a DAGs folder, for ``dag.test()`` in demos, tests and benchmarks."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["load_dag"]


def load_dag(dag_id: str, folder: Path) -> Any:
    """The DAG ``dag_id`` defined by one of the ``*.py`` files in ``folder``.

    Each file is executed as a module of its own (as Airflow's DAG processor
    does), so the DAG's ``test()`` can run it in-process. Raises
    ``LookupError`` when no file defines it.
    """
    for path in sorted(Path(folder).glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"flux_dags_{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            if getattr(value, "dag_id", None) == dag_id and hasattr(value, "test"):
                return value
    raise LookupError(f"no DAG {dag_id!r} in {folder}")
