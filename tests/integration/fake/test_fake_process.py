"""``FakeFluxProcess``: the fake API in a child process, driven over its stdin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from benchmarks.fake_process import FakeApiProcess, create_tasks
from devtools.sessions import process_alive
from flux_provider.testing import FakeFluxProcess
from tests.support.fake import (
    BALANCE,
    CREATE,
    INFO,
    WAIT,
    LineReader,
    body,
    keyed_client,
    port_refuses,
    subprocess_env,
    wait_until,
)

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _client(fake: FakeFluxProcess) -> httpx.Client:
    return keyed_client(fake.base_url, fake.api_key)


def _port(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def test_start_serve_and_stop() -> None:
    launcher = FakeFluxProcess(api_key="proc-key", duration=0.5)
    with pytest.raises(RuntimeError, match="not started"):
        _ = launcher.base_url

    with launcher as fake:
        pid = fake.pid
        with _client(fake) as http:
            created = http.post(CREATE, json=body())
        connection = json.loads(fake.airflow_connection_json())
        with pytest.raises(RuntimeError, match="already running"):
            fake.start()

    assert created.status_code == 200
    assert fake.base_url.startswith("http://127.0.0.1:")
    assert connection == {"conn_type": "flux", "host": fake.base_url, "password": "proc-key"}
    assert fake.argv[1:4] == ["-m", "flux_provider.testing", "--stdin-control"]
    assert not process_alive(pid)
    assert port_refuses(_port(fake.base_url))
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.pid
    fake.stop()  # idempotent


def test_options_reach_the_child() -> None:
    with FakeFluxProcess(
        duration=0,
        auth_header="Authorization",
        status_words={"success": "DONE"},
        result_shape="url_objects",
        balance=7,
        credits_per_image=3,
    ) as fake:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        with httpx.Client(base_url=fake.base_url, headers=headers, trust_env=False) as http:
            task_id = http.post(CREATE, json=body()).json()["data"]["task_id"]
            data = http.get(INFO, params={"task_id": task_id}).json()["data"]
            balance = http.get(BALANCE).json()["data"]["balance"]
        connection = json.loads(fake.airflow_connection_json())

    assert data["status"] == "DONE"
    assert data["result"] == [{"url": f"{fake.base_url}/files/{task_id}/0.png"}]
    assert balance == 4
    assert connection["extra"] == {"header_name": "Authorization"}


def test_stdin_protocol() -> None:
    with FakeFluxProcess(duration=3600) as fake, _client(fake) as http:
        slow = http.post(CREATE, json=body()).json()["data"]["task_id"]
        fake.set_duration(0)
        fast = http.post(CREATE, json=body()).json()["data"]["task_id"]
        statuses = [
            http.get(INFO, params={"task_id": task_id}).json()["data"]["status"]
            for task_id in (slow, fast)
        ]
        http.get(BALANCE)
        stats = fake.take_stats()
        again = fake.take_stats()
        unknown = fake.command("dance")
        with pytest.raises(RuntimeError, match="refused duration -1"):
            fake.set_duration(-1)
        duration = fake.duration

    assert statuses == ["pending", "success"]
    assert duration == 0
    assert stats["create_requests"] == stats["tasks_created"] == 2
    assert (stats["poll_requests"], stats["balance_requests"], stats["requests"]) == (2, 1, 5)
    assert stats["connections"] == 1  # one keep-alive connection
    assert again["requests"] == 0
    assert unknown.startswith("error: unknown command")


def test_complete_all_ends_every_running_task_and_only_those() -> None:
    with FakeFluxProcess(duration=3600) as fake, _client(fake) as http:
        first, second = (http.post(CREATE, json=body()).json()["data"]["task_id"] for _ in "12")
        ended = fake.complete_all()
        again = fake.complete_all()
        statuses = [
            http.get(INFO, params={"task_id": task_id}).json()["data"]["status"]
            for task_id in (first, second)
        ]
        third = http.post(CREATE, json=body()).json()["data"]["task_id"]
        third_status = http.get(INFO, params={"task_id": third}).json()["data"]["status"]

    assert (ended, again) == (2, 0)
    assert statuses == ["success", "success"]
    assert third_status == "pending"  # a task created afterwards runs as usual


def test_quit_ends_the_child() -> None:
    with FakeFluxProcess() as fake:
        pid = fake.pid
        answer = fake.command("quit")

        assert wait_until(lambda: not process_alive(pid))
        with pytest.raises(RuntimeError):
            fake.command("stats")

    assert answer == "bye"
    assert port_refuses(_port(fake.base_url))


def test_a_child_that_cannot_start_is_reported() -> None:
    with pytest.raises(RuntimeError, match=r"ended \(exit status 2\)"):
        FakeFluxProcess(result_shape="nope").start()  # type: ignore[arg-type]


def test_startup_wait_is_bounded() -> None:
    launcher = FakeFluxProcess(startup_timeout=0.0)

    with pytest.raises(TimeoutError, match="said nothing"):
        launcher.start()
    with pytest.raises(RuntimeError, match="not running"):
        _ = launcher.pid  # the half-started child was stopped


def test_log_path_collects_the_childs_stderr(tmp_path: Path) -> None:
    log = tmp_path / "fake.log"

    with FakeFluxProcess(verbose=True, log_path=log) as fake, _client(fake) as http:
        http.get("/nowhere-to-be-found")

    assert "/nowhere-to-be-found" in log.read_text()


@needs_proc
def test_the_child_ends_when_its_parent_dies(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys

            from flux_provider.testing import FakeFluxProcess

            fake = FakeFluxProcess().start()
            print(fake.pid, fake.base_url, flush=True)
            sys.stdin.read()  # wait to be killed
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    child: int | None = None
    try:
        assert parent.stdout is not None
        pid_text, base_url = LineReader(parent.stdout).next().split()
        child = int(pid_text)
        assert process_alive(child)
        assert httpx.get(f"{base_url}/x", timeout=WAIT, trust_env=False).status_code == 404

        parent.send_signal(signal.SIGKILL)  # no chance to clean up
        parent.wait(timeout=WAIT)

        assert wait_until(lambda: not process_alive(int(pid_text))), "the fake outlived its parent"
        assert port_refuses(_port(base_url))
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait(timeout=WAIT)
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()
        if child is not None and process_alive(child):
            os.kill(child, signal.SIGKILL)


def test_benchmark_launcher_keeps_its_interface(tmp_path: Path) -> None:
    with FakeApiProcess(duration=0.0, log_path=tmp_path / "bench.log") as fake:
        ids = create_tasks(fake.base_url, fake.api_key, 3, prefix="check")
        stats = fake.take_stats()
        cpu = fake.cpu_seconds()
        connection = json.loads(fake.connection_json())

    assert len(set(ids)) == 3
    assert all(task_id.startswith("task_") for task_id in ids)
    assert stats["tasks_created"] == 3
    assert cpu > 0
    assert connection["host"] == fake.base_url
    assert connection["password"] == fake.api_key == "sk-flux-bench-key"


def test_benchmark_launcher_reports_the_fakes_own_task_times(tmp_path: Path) -> None:
    with FakeApiProcess(duration=0.0, log_path=tmp_path / "bench.log", max_in_flight=1) as fake:
        ids = create_tasks(fake.base_url, fake.api_key, 2, prefix="timed")
        with FakeApiProcess(duration=3600.0, max_in_flight=1) as slow:
            (running,) = create_tasks(slow.base_url, slow.api_key, 1)
            with httpx.Client(base_url=slow.base_url, headers={"x-api-key": slow.api_key}) as http:
                refused = http.post(CREATE, json=body())
            slow_times = slow.task_times()
        times = fake.task_times()

    assert list(times) == ids
    for task in times.values():
        assert task.status == "success"
        assert task.completed_at == task.created_at  # created_at + duration, to the float
    assert refused.status_code == 429  # the limit reached the child
    assert list(slow_times) == [running]
    assert slow_times[running].completed_at is None
    assert slow_times[running].status in ("pending", "running")
