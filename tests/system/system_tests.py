"""What makes each ``tests/system/<provider>/example_*.py`` a test: ``get_test_run(dag)``.

A system test is a DAG file that runs as a test: at its end, ``test_run = get_test_run(dag)``
gives pytest a module-level test that runs the DAG through ``dag.test()`` and requires the run
to succeed (the checks are tasks of the DAG itself). The run goes to the real API when
``FLUX_API_KEY`` is set (and ``FLUX_BASE_URL``, if set, names the service), else to a fake API
started for the run on 127.0.0.1, so ``make test`` runs every system test with no key and no
network.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_provider.api.config import DEFAULT_BASE_URL
from flux_provider.testing import FakeFluxServer

__all__ = ["API_KEY_VARIABLE", "BASE_URL_VARIABLE", "flux_connection", "get_test_run"]

API_KEY_VARIABLE = "FLUX_API_KEY"
"""With a key here, the system tests run against the real API (and spend credits)."""

BASE_URL_VARIABLE = "FLUX_BASE_URL"
"""The real API's base URL, if not ``https://api.crun.ai``."""

# A real generation takes about 30 s and its 95th percentile about a minute (API.md); the
# bound leaves room for a retry and the service's slow days.
_RUN_TIMEOUT = 900
_FAKE_KEY = "system-test-key"


@contextlib.contextmanager
def flux_connection() -> Iterator[str]:
    """The ``flux_default`` connection as JSON: the real API when ``FLUX_API_KEY`` is set, else
    a fake API started for the block (and stopped after it)."""
    key = os.environ.get(API_KEY_VARIABLE)
    if key:
        host = os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL
        yield json.dumps({"conn_type": "flux", "host": host, "password": key})
        return
    with FakeFluxServer(api_key=_FAKE_KEY, duration=1.0) as fake:
        yield fake.airflow_connection_json()


def get_test_run(dag: Any, **test_kwargs: Any) -> Callable[..., None]:
    """A pytest test running ``dag`` with ``dag.test(**test_kwargs)`` against the API.

    The run's ``output_dir`` param is the test's temporary folder. The test fails unless the
    run succeeds, naming the tasks that did not.
    """

    @pytest.mark.timeout(_RUN_TIMEOUT)
    def test_run(airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        with flux_connection() as connection:
            monkeypatch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", connection)
            run = dag.test(run_conf={"output_dir": str(tmp_path / "images")}, **test_kwargs)
        unsuccessful = {
            ti.task_id: str(ti.state)
            for ti in run.get_task_instances()
            if str(ti.state) != "success"
        }
        assert str(run.state) == "success", f"the run ended {run.state}: {unsuccessful}"
        assert not unsuccessful

    return test_run
