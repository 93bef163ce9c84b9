"""Secret hygiene end to end: the API key appears nowhere a real Airflow keeps anything.

One ``airflow standalone`` (API server, scheduler, DAG processor, triggerer,
LocalExecutor, SQLite) runs ``flux_text_to_image`` against the fake API, whose
key is a distinctive ``sk-flux-LEAKCHECK-<hex>``. Five runs, one after the other:

1. success, through the triggerer;
2. ``CreateTask`` answers 401 with a message that echoes the key;
3. ``CreateTask`` answers 422, echoing the key;
4. the triggerer's ``TaskInfo`` poll answers 401, echoing the key;
5. the task ends ``failed`` with a failure message (``result.message``) that echoes the key.

Then the connection's Test button is pressed through the REST API (the API
server runs the hook's ``test_connection``), and the balance endpoint it asks
answers 401, echoing the key.

The fake's tasks never end on their own: the test ends each one once the
trigger row exists, so every deferred run is observed while deferred. Then the
key (and, to catch partial echoes, its random part alone) is searched for in
every file of the Airflow home (task, trigger, triggerer, scheduler and DAG
processor logs, ``standalone.log``, the SQLite file itself), every cell of every
table and the ``iterdump()`` text, the trigger rows (decrypted with Airflow's
own code) and task-instance ``next_kwargs`` captured while the runs went on, and
the REST API's answers (runs, task instances with rendered fields, tries,
XCom values, logs, event log, connections, the Test button's verdict). It must
be found 0 times; each search also has a positive control proving it looks
where the run's data is.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from devtools.standalone import StandaloneAirflow
from flux_provider.testing import FakeFluxServer, Fault
from tests.conftest import standalone_airflow
from tests.support.security import KeySearch

pytestmark = pytest.mark.timeout(900)

KEY = f"sk-flux-LEAKCHECK-{secrets.token_hex(16)}"
DAG_ID = "flux_text_to_image"
TASK_ID = "generate_hero_image"
RUN_TIMEOUT = 180.0
POLL = 0.25


@dataclass
class Run:
    """One scripted DAG run and what was captured while it went on."""

    name: str
    expected: str
    run_id: str = ""
    flux_task_id: str = ""
    state: str = ""
    try_number: int = 0
    deferred: bool = False


@dataclass
class Captured:
    """Rows that exist only while a run is going on, captured as it went."""

    trigger_rows: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)
    """(id, created_date) -> (classpath, kwargs): SQLite reuses the id of a deleted row."""
    next_kwargs: set[str] = field(default_factory=set)
    test_button: dict[str, Any] = field(default_factory=dict)
    """The REST API's answer to the connection test, once it was pressed."""


def _db(standalone: StandaloneAirflow) -> sqlite3.Connection:
    path = standalone.home / "airflow.db"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _capture(standalone: StandaloneAirflow, captured: Captured) -> None:
    """Copy the trigger rows and task-instance ``next_kwargs`` that exist right now."""
    try:
        with contextlib.closing(_db(standalone)) as db:
            for trigger_id, created, classpath, kwargs in db.execute(
                "SELECT id, created_date, classpath, kwargs FROM trigger"
            ):
                captured.trigger_rows[(int(trigger_id), str(created))] = (
                    str(classpath),
                    str(kwargs),
                )
            for (next_kwargs,) in db.execute(
                "SELECT next_kwargs FROM task_instance WHERE next_kwargs IS NOT NULL"
            ):
                captured.next_kwargs.add(str(next_kwargs))
    except sqlite3.OperationalError:
        pass  # the scheduler holds a write lock for a moment: the next round reads it


def _wait(
    standalone: StandaloneAirflow,
    captured: Captured,
    condition: Callable[[], bool],
    what: str,
    timeout: float = RUN_TIMEOUT,
) -> None:
    """Capture rows until ``condition()`` holds (a bounded wait, not a sleep for a race)."""
    deadline = time.monotonic() + timeout
    while True:
        _capture(standalone, captured)
        if condition():
            _capture(standalone, captured)
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s\n{standalone.tail()}")
        time.sleep(POLL)


def _ti(standalone: StandaloneAirflow, run_id: str) -> dict[str, Any]:
    (ti,) = standalone.task_instances(DAG_ID, run_id)
    return ti


def _run(
    standalone: StandaloneAirflow,
    fake: FakeFluxServer,
    captured: Captured,
    run: Run,
    *,
    before: Callable[[], None] = lambda: None,
    when_deferred: Callable[[str], None] | None = None,
) -> Run:
    """Trigger one run, act on it while it is deferred, wait for its end."""
    known = set(fake.tasks)
    triggers_before = set(captured.trigger_rows)
    before()
    run.run_id = standalone.trigger_dag(DAG_ID)
    if when_deferred is not None:

        def deferred() -> bool:
            new_trigger = bool(set(captured.trigger_rows) - triggers_before)
            return new_trigger and _ti(standalone, run.run_id)["state"] == "deferred"

        _wait(standalone, captured, deferred, f"{run.name}: the task deferred")
        _wait(
            standalone,
            captured,
            lambda: standalone.deferral_released(DAG_ID, run.run_id, TASK_ID, 1),
            f"{run.name}: the scheduler heard that the deferring workload ended",
        )
        run.deferred = True
        (run.flux_task_id,) = set(fake.tasks) - known
        when_deferred(run.flux_task_id)

    def ended() -> bool:
        return standalone.dag_run(DAG_ID, run.run_id)["state"] in ("success", "failed")

    _wait(standalone, captured, ended, f"{run.name}: the run ended")
    run.state = str(standalone.dag_run(DAG_ID, run.run_id)["state"])
    run.try_number = int(_ti(standalone, run.run_id)["try_number"])
    fake.clear_faults()
    return run


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeFluxServer]:
    """The fake API with the distinctive key; its tasks end only when the test says so."""
    with FakeFluxServer(api_key=KEY, duration=3600) as server:
        yield server


@pytest.fixture(scope="module")
def standalone(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeFluxServer
) -> Iterator[StandaloneAirflow]:
    home = tmp_path_factory.mktemp("leakcheck-airflow-home")
    with standalone_airflow(home, fake, {"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}) as sa:
        yield sa


@pytest.fixture(scope="module")
def runs(standalone: StandaloneAirflow, fake: FakeFluxServer) -> tuple[dict[str, Run], Captured]:
    """The five scripted runs, one after the other."""
    captured = Captured()
    done: dict[str, Run] = {}

    def go(run: Run, **options: Any) -> None:
        done[run.name] = _run(standalone, fake, captured, run, **options)

    go(Run("success", "success"), when_deferred=fake.complete)
    go(
        Run("create-401", "failed"),
        before=lambda: fake.add_fault(
            Fault(endpoint="create", status=401, message=f"invalid key {KEY}")
        ),
    )
    go(
        Run("create-422", "failed"),
        before=lambda: fake.add_fault(
            Fault(endpoint="create", status=422, message=f"bad input sent with {KEY}")
        ),
    )
    go(
        Run("poll-401-in-triggerer", "failed"),
        when_deferred=lambda _: fake.add_fault(
            Fault(endpoint="poll", status=401, message=f"key {KEY} was revoked", times=None)
        ),
    )
    go(
        Run("failure-message-echo", "failed"),
        when_deferred=lambda flux_task_id: fake.fail(
            flux_task_id, code=422, message=f"content refused for account {KEY}"
        ),
    )
    # The Test button of the stored connection, as the UI sends it (the key is not re-sent).
    fake.add_fault(Fault(endpoint="balance", status=401, message=f"key {KEY} has no balance"))
    captured.test_button = standalone.api(
        "POST",
        "/api/v2/connections/test",
        json={"connection_id": "flux_default", "conn_type": "flux", "host": fake.base_url},
    )
    fake.clear_faults()
    return done, captured


def test_the_runs_went_as_scripted(
    runs: tuple[dict[str, Run], Captured], fake: FakeFluxServer, standalone: StandaloneAirflow
) -> None:
    done, captured = runs
    assert {name: run.state for name, run in done.items()} == {
        name: run.expected for name, run in done.items()
    }, standalone.tail()
    # A 401 or 422 is not retried: each failed run failed on its first try.
    assert {run.try_number for run in done.values()} == {1}
    assert [name for name, run in done.items() if run.deferred] == [
        "success",
        "poll-401-in-triggerer",
        "failure-message-echo",
    ]
    assert len(captured.trigger_rows) >= 3  # one per deferred run, captured while it existed
    assert fake.stats.create_requests == 5
    assert fake.stats.tasks_created == 3
    assert fake.stats.image_requests == 1
    # The Test button asked for the balance once, and reported the 401 without the key.
    assert fake.stats.balance_requests == 1
    assert captured.test_button["status"] is False, captured.test_button
    assert "key *** has no balance" in captured.test_button["message"]


def test_key_is_in_no_file_of_the_airflow_home(
    runs: tuple[dict[str, Run], Captured], standalone: StandaloneAirflow
) -> None:
    """Task logs, trigger logs, triggerer/scheduler/processor/API server logs, the DB file."""
    done, _ = runs
    search = KeySearch(KEY)
    files = sorted(path for path in standalone.home.rglob("*") if path.is_file())
    for path in files:
        search.look(str(path.relative_to(standalone.home)), path.read_bytes())
    print(f"\nsearched {search.places} files of the Airflow home")
    assert search.found == [], "\n".join(search.found)

    # Positive controls: these files hold the runs' data, redacted echoes included.
    logs = standalone.logs_folder
    task_logs = [p for p in logs.rglob("attempt=*.log") if ".trigger." not in p.name]
    trigger_logs = standalone.trigger_log_files()
    assert len(task_logs) >= len(done)
    assert len(trigger_logs) >= 3
    everything = "\n".join(p.read_text(errors="replace") for p in task_logs + trigger_logs)
    assert "invalid key ***" in everything  # create-401, worker side
    assert "bad input sent with ***" in everything  # create-422
    assert "key *** was revoked" in everything  # poll-401, triggerer side
    assert "content refused for account ***" in everything  # the failure message's echo
    assert (standalone.home / "airflow.db").stat().st_size > 0
    assert search.places >= len(task_logs) + len(trigger_logs) + 2


def test_key_is_in_no_row_of_the_metadata_database(
    runs: tuple[dict[str, Run], Captured], standalone: StandaloneAirflow
) -> None:
    """Every cell of every table, and the full ``iterdump()`` (the ``sqlite3 .dump`` text)."""
    done, _ = runs
    search = KeySearch(KEY)
    with contextlib.closing(_db(standalone)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = 0
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from the DB
                rows += 1
                for column, value in enumerate(row):
                    if isinstance(value, (str, bytes)):
                        search.look(f"{table}[{rows}].{column}", value)
        dump = "\n".join(db.iterdump())
    search.look("iterdump", dump)
    for needle in KeySearch(KEY).needles:  # iterdump writes BLOBs as X'<hex>'
        assert needle.encode().hex().upper() not in dump.upper()
    print(f"\nsearched {len(tables)} tables, {rows} rows, {search.places} cells and dumps")
    assert search.found == [], "\n".join(search.found)

    # Positive controls: the dump holds the runs, their XCom and rendered fields.
    for run in done.values():
        assert run.run_id in dump
    assert done["success"].flux_task_id in dump
    assert "A studio photo of a ceramic teapot" in dump  # rendered prompt
    assert {"xcom", "rendered_task_instance_fields", "trigger", "task_instance"} <= set(tables)


def test_key_is_in_no_trigger_row_and_no_trigger_event(
    runs: tuple[dict[str, Run], Captured], standalone: StandaloneAirflow
) -> None:
    """Trigger rows (kwargs decrypted by Airflow itself) and the events handed back to tasks."""
    done, captured = runs
    search = KeySearch(KEY)
    encrypted = {f"{k[0]}@{k[1]}": v[1] for k, v in captured.trigger_rows.items()}
    decrypt = (
        "import json, sys\n"
        "from airflow.models.trigger import Trigger\n"
        "rows = json.load(sys.stdin)\n"
        "print(json.dumps({k: repr(Trigger._decrypt_kwargs(v)) for k, v in rows.items()}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", decrypt],
        input=json.dumps(encrypted),
        env=standalone.env,
        cwd=standalone.home,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    decrypted: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    for (trigger_id, created), (classpath, kwargs) in captured.trigger_rows.items():
        name = f"{trigger_id}@{created}"
        search.look(f"trigger {name} classpath", classpath)
        search.look(f"trigger {name} kwargs (as stored)", kwargs)
        search.look(f"trigger {name} kwargs (decrypted)", decrypted[name])
    for index, payload in enumerate(sorted(captured.next_kwargs)):
        search.look(f"task_instance.next_kwargs #{index}", payload)
    print(f"\nsearched {len(captured.trigger_rows)} trigger rows, {search.places} values")
    assert search.found == [], "\n".join(search.found)

    # Positive controls: Airflow's decryption worked, and the events were captured.
    deferred = [run for run in done.values() if run.deferred]
    for run in deferred:
        assert any(run.flux_task_id in text for text in decrypted.values()), run.name
    assert all("FluxTaskTrigger" in row[0] for row in captured.trigger_rows.values())
    events = " ".join(captured.next_kwargs)
    assert "key *** was revoked" in events or "content refused for account ***" in events


def test_key_is_in_no_answer_of_the_rest_api(
    runs: tuple[dict[str, Run], Captured], standalone: StandaloneAirflow
) -> None:
    """Runs, task instances (rendered fields), tries, XCom values, logs, event log, connections,
    and the Test button's verdict."""
    done, captured = runs
    search = KeySearch(KEY)
    texts: dict[str, str] = {}

    def get(path: str, **params: Any) -> Any:
        answer = standalone.api("GET", path, params=params or None)
        texts[path] = json.dumps(answer)
        search.look(path, texts[path])
        return answer

    base = f"/api/v2/dags/{DAG_ID}/dagRuns"
    for run in done.values():
        get(f"{base}/{run.run_id}")
        get(f"{base}/{run.run_id}/taskInstances")
        ti_path = f"{base}/{run.run_id}/taskInstances/{TASK_ID}"
        ti = get(ti_path)
        get(f"{ti_path}/tries")
        for entry in get(f"{ti_path}/xcomEntries")["xcom_entries"]:
            get(f"{ti_path}/xcomEntries/{entry['key']}", deserialize="true")
        for try_number in range(1, int(ti["try_number"]) + 1):
            get(f"{ti_path}/logs/{try_number}", full_content="true")
    get("/api/v2/eventLogs", dag_id=DAG_ID, limit=100)
    get("/api/v2/connections")
    get(f"/api/v2/dags/{DAG_ID}/details")
    get("/api/v2/importErrors")
    texts["POST /api/v2/connections/test"] = json.dumps(captured.test_button)
    search.look("POST /api/v2/connections/test", texts["POST /api/v2/connections/test"])
    print(f"\nsearched {search.places} REST answers")
    assert search.found == [], "\n".join(search.found)

    # Positive controls: XCom and rendered fields are there, and the logs carry the echoes.
    success = f"{base}/{done['success'].run_id}/taskInstances/{TASK_ID}"
    assert done["success"].flux_task_id in texts[f"{success}/xcomEntries/return_value"]
    rendered = json.loads(texts[success])["rendered_fields"]
    assert rendered["prompt"].startswith("A studio photo of a ceramic teapot")
    create_401_log = texts[f"{base}/{done['create-401'].run_id}/taskInstances/{TASK_ID}/logs/1"]
    assert "invalid key ***" in create_401_log
    poll_401_log = texts[
        f"{base}/{done['poll-401-in-triggerer'].run_id}/taskInstances/{TASK_ID}/logs/1"
    ]
    assert "key *** was revoked" in poll_401_log
    assert "key *** has no balance" in texts["POST /api/v2/connections/test"]


def test_key_is_registered_with_the_secrets_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the connection (sync, as the worker does) masks a never-seen key in every log."""
    from airflow.sdk.log import redact  # type: ignore[attr-defined]

    from flux_provider.hooks import FluxHook

    key = f"sk-flux-MASKCHECK-{secrets.token_hex(16)}"
    connection = {"conn_type": "flux", "host": "http://127.0.0.1:9", "password": key}
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_MASKCHECK", json.dumps(connection))
    assert key in str(redact(f"a log line with {key}"))  # not known to the masker yet

    FluxHook(flux_conn_id="flux_maskcheck").get_config()

    assert str(redact(f"a log line with {key}")) == "a log line with ***"


async def test_key_is_registered_with_the_secrets_masker_async(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for the trigger's path, which reads the connection without blocking."""
    from airflow.sdk.log import redact  # type: ignore[attr-defined]

    from flux_provider.hooks import FluxHook

    key = f"sk-flux-MASKCHECK-{secrets.token_hex(16)}"
    connection = {"conn_type": "flux", "host": "http://127.0.0.1:9", "password": key}
    monkeypatch.setenv("AIRFLOW_CONN_FLUX_MASKCHECK_ASYNC", json.dumps(connection))
    assert key in str(redact(f"a log line with {key}"))

    await FluxHook(flux_conn_id="flux_maskcheck_async").aget_config()

    assert str(redact(f"a log line with {key}")) == "a log line with ***"
