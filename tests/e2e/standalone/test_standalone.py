"""The provider inside a real ``airflow standalone``: scheduler, executor, triggerer, API server.

One standalone instance (fresh AIRFLOW_HOME, SQLite, LocalExecutor) is shared by the module; the
fake FLUX API runs in the test process and reaches Airflow as ``AIRFLOW_CONN_FLUX_DEFAULT``.
Start-up takes 20-40 s on a small machine, a run another 15-30 s.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.standalone import StandaloneAirflow
from flux_provider.testing import FakeFluxServer
from tests.conftest import API_KEY, standalone_airflow
from tests.support.airflow import CONN_FIELDS
from tests.support.compat import logged_by

pytestmark = pytest.mark.timeout(600)

DAG_ID = "flux_text_to_image"
TASK_ID = "generate_hero_image"


@pytest.fixture(scope="module")
def fake_flux() -> Iterator[FakeFluxServer]:
    """The fake API; its tasks end when the test says so, after the operator has deferred."""
    with FakeFluxServer(api_key=API_KEY, duration=3600) as server:
        yield server


def _wait_until(standalone: StandaloneAirflow, condition: Callable[[], bool], what: str) -> None:
    """A bounded wait for ``condition`` (not a sleep for a race)."""
    deadline = time.monotonic() + 180
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached\n{standalone.tail()}"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def standalone(
    tmp_path_factory: pytest.TempPathFactory, fake_flux: FakeFluxServer
) -> Iterator[StandaloneAirflow]:
    home = tmp_path_factory.mktemp("standalone-airflow-home")
    with standalone_airflow(home, fake_flux) as sa:
        yield sa


def test_deferrable_dag_runs_in_the_real_triggerer(
    standalone: StandaloneAirflow, fake_flux: FakeFluxServer
) -> None:
    creates_before = fake_flux.stats.create_requests

    known = set(fake_flux.tasks)
    run_id = standalone.trigger_dag(DAG_ID)

    def deferred() -> bool:
        state: str = standalone.task_instances(DAG_ID, run_id)[0]["state"]
        return state == "deferred"

    _wait_until(standalone, deferred, "the task deferred")
    (flux_task_id,) = set(fake_flux.tasks) - known
    _wait_until(
        standalone,
        lambda: standalone.deferral_released(DAG_ID, run_id, TASK_ID, 1),
        "the scheduler heard that the deferring workload ended",
    )

    def polled_by_the_trigger() -> bool:
        # The operator checks once before deferring; any further poll is the trigger's.
        polls = [r for r in fake_flux.stats.requests if r.query.get("task_id") == flux_task_id]
        return len(polls) >= 2

    _wait_until(standalone, polled_by_the_trigger, "the trigger polled")
    assert fake_flux.state_of(flux_task_id) == "pending"
    fake_flux.complete(flux_task_id)
    state = standalone.wait_for_run(DAG_ID, run_id, timeout=180)
    assert state == "success", standalone.tail()

    [ti] = standalone.task_instances(DAG_ID, run_id)
    assert ti["task_id"] == TASK_ID
    assert ti["state"] == "success"

    result = standalone.xcom(DAG_ID, run_id, TASK_ID)
    assert result["state"] == "success"
    [url] = result["result_urls"]
    assert url.startswith(f"{fake_flux.base_url}/")
    assert result["flux_task_id"] == flux_task_id
    assert standalone.xcom(DAG_ID, run_id, TASK_ID, key="flux_task_id") == flux_task_id
    assert fake_flux.stats.create_requests - creates_before == 1
    assert fake_flux.state_of(flux_task_id) == "success"

    # The task process handed the wait over: it ended its try by deferring ...
    task_log = standalone.task_log(DAG_ID, run_id, TASK_ID, ti["try_number"])
    assert f"Deferring: polling flux task {flux_task_id} in the triggerer" in task_log, task_log
    assert "Pausing task as DEFERRED" in task_log

    # ... and the trigger ran in the triggerer: only TriggerRunnerSupervisor writes
    # "<task log>.trigger.<triggerer job id>.log", and that id is a live TriggererJob.
    attempt_dir = f"dag_id={DAG_ID}/run_id={run_id}/task_id={TASK_ID}"
    trigger_logs = [
        path
        for path in standalone.trigger_log_files()
        if path.relative_to(standalone.logs_folder).parent == Path(attempt_dir)
    ]
    assert len(trigger_logs) == 1, standalone.triggerer_log()
    match = re.fullmatch(r"attempt=\d+\.log\.trigger\.(\d+)\.log", trigger_logs[0].name)
    assert match is not None, trigger_logs[0].name
    job_id = int(match.group(1))
    triggerer_jobs = standalone.api("GET", "/api/v2/jobs", params={"job_type": "TriggererJob"})
    assert {job["id"]: job["state"] for job in triggerer_jobs["jobs"]}.get(job_id) == "running"

    records = [json.loads(line) for line in trigger_logs[0].read_text().splitlines()]
    polls = [
        record
        for record in records
        if logged_by(record, "flux_provider.triggers.task.FluxTaskTrigger")
        and re.match(rf"Flux task {re.escape(flux_task_id)} is \w+ after ", record.get("event", ""))
    ]
    assert polls, standalone.triggerer_log()
    fired = [record for record in records if record.get("event", "") == "Trigger fired event"]
    assert len(fired) == 1, standalone.triggerer_log()
    assert flux_task_id in fired[0]["result"]
    assert re.search(
        rf"Flux task {re.escape(flux_task_id)} is \w+ after ", standalone.triggerer_log()
    )


def test_connection_form_metadata_in_hook_meta_endpoint(standalone: StandaloneAirflow) -> None:
    hooks = standalone.api("GET", "/ui/connections/hook_meta")
    [flux] = [hook for hook in hooks if hook["connection_type"] == "flux"]

    assert flux["hook_class_name"] == "flux_provider.hooks.flux.FluxHook"
    fields = flux["standard_fields"]
    assert fields["host"]["title"] == "API base URL"
    assert fields["password"]["title"] == "API key"
    assert fields["login"]["hidden"] is True
    assert fields["port"]["hidden"] is True
    extra_fields = flux["extra_fields"]
    assert set(extra_fields) == CONN_FIELDS, extra_fields
    assert extra_fields["header_name"]["schema"]["title"] == "Auth header"
    assert extra_fields["timeout"]["value"] == 30
    assert "boolean" in extra_fields["allow_insecure_http"]["schema"]["type"]
    assert extra_fields["allow_insecure_http"]["value"] is False


def test_providers_list_shows_the_provider(standalone: StandaloneAirflow) -> None:
    providers = standalone.cli("providers", "list", timeout=120).stdout
    assert "airflow-provider-flux" in providers

    hooks = standalone.cli("providers", "hooks", timeout=120).stdout
    [row] = [line for line in hooks.splitlines() if "flux_provider.hooks.flux.FluxHook" in line]
    assert "flux" in row.replace("flux_provider.hooks.flux.FluxHook", "")
