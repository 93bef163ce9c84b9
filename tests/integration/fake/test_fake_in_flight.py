"""The fake's per-account limit on tasks in flight (``max_in_flight``): 429, Retry-After, stats."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from flux_provider.testing import FakeFluxProcess, FakeFluxServer, Fault
from tests.support.fake import (
    BALANCE,
    CREATE,
    KEY,
    WAIT,
    FakeClock,
    body,
    create,
    keyed_client,
    subprocess_env,
)


def _refused(response: httpx.Response, retry_after: str = "1") -> None:
    """Assert ``response`` is the limit's 429: the Crun envelope with code 429, Retry-After."""
    assert response.status_code == 429, response.text
    envelope = response.json()
    assert envelope["code"] == 429
    assert envelope["data"] is None
    assert "in flight" in envelope["message"]
    assert response.headers["retry-after"] == retry_after


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[FakeFluxServer]:
    """A started fake allowing two tasks in flight, each lasting 3 clock seconds."""
    with FakeFluxServer(api_key=KEY, duration=3.0, clock=clock, max_in_flight=2) as server:
        yield server


@pytest.fixture
def limited_client(limited: FakeFluxServer) -> Iterator[httpx.Client]:
    with keyed_client(limited.base_url) as http:
        yield http


def test_a_create_beyond_the_limit_is_429_and_creates_and_charges_nothing(
    limited: FakeFluxServer, limited_client: httpx.Client
) -> None:
    first, second = create(limited_client), create(limited_client)
    balance = limited.balance

    refused = limited_client.post(CREATE, json=body())

    _refused(refused)
    assert list(limited.tasks) == [first, second]
    assert limited.balance == balance
    stats = limited.stats
    assert (stats.create_requests, stats.tasks_created) == (3, 2)
    assert (stats.rate_limited_creates, stats.peak_in_flight) == (1, 2)
    assert limited.in_flight == 2


def test_tasks_ending_on_the_clock_free_their_slots(
    limited: FakeFluxServer, limited_client: httpx.Client, clock: FakeClock
) -> None:
    create(limited_client)
    clock.advance(1.0)
    create(limited_client)
    clock.advance(1.9)  # the first ends at 3.0
    _refused(limited_client.post(CREATE, json=body()))

    clock.advance(0.1)
    third = create(limited_client)
    _refused(limited_client.post(CREATE, json=body()))
    clock.advance(3.0)

    assert limited.state_of(third) == "success"
    assert limited.in_flight == 0
    assert (create(limited_client), limited.in_flight) == (list(limited.tasks)[-1], 1)
    assert limited.stats.rate_limited_creates == 2
    assert limited.stats.peak_in_flight == 2


def test_failed_tasks_free_their_slots_when_they_end(
    limited: FakeFluxServer, limited_client: httpx.Client, clock: FakeClock
) -> None:
    limited.fail_next_tasks(2)
    create(limited_client)
    create(limited_client)
    _refused(limited_client.post(CREATE, json=body()))

    clock.advance(3.0)

    create(limited_client)
    assert limited.in_flight == 1


def test_complete_and_fail_free_a_slot_at_once(
    limited: FakeFluxServer, limited_client: httpx.Client
) -> None:
    first, second = create(limited_client), create(limited_client)
    _refused(limited_client.post(CREATE, json=body()))

    limited.complete(first)
    third = create(limited_client)
    _refused(limited_client.post(CREATE, json=body()))
    limited.fail(second)
    limited.fail(second)  # ending it again the same way frees nothing more
    fourth = create(limited_client)

    _refused(limited_client.post(CREATE, json=body()))
    assert [limited.state_of(task) for task in (third, fourth)] == ["pending", "pending"]
    assert (limited.stats.tasks_created, limited.stats.rate_limited_creates) == (4, 3)


def test_a_task_ended_early_frees_its_slot_whichever_ends_first_on_the_clock(
    limited: FakeFluxServer, limited_client: httpx.Client, clock: FakeClock
) -> None:
    create(limited_client)
    clock.advance(1.0)
    later = create(limited_client)

    limited.complete(later)  # the task that would end last on the clock

    assert limited.in_flight == 1
    create(limited_client)
    _refused(limited_client.post(CREATE, json=body()))


def test_submitted_tasks_are_not_in_flight_for_the_limit(
    limited: FakeFluxServer, limited_client: httpx.Client
) -> None:
    for _ in range(3):
        limited.submit({"prompt": "made elsewhere"})

    create(limited_client)
    create(limited_client)

    assert limited.in_flight == 2
    assert limited.stats.peak_in_flight == 2


def test_tasks_of_no_duration_never_hold_a_slot(clock: FakeClock) -> None:
    with (
        FakeFluxServer(api_key=KEY, duration=0, clock=clock, max_in_flight=1) as fake,
        keyed_client(fake.base_url) as http,
    ):
        for _ in range(3):
            create(http)

        assert fake.in_flight == 0
        assert (fake.stats.tasks_created, fake.stats.peak_in_flight) == (3, 1)


def test_the_limit_comes_after_the_key_and_the_body_checks_and_before_credits(
    limited: FakeFluxServer, limited_client: httpx.Client
) -> None:
    create(limited_client)
    create(limited_client)
    limited.balance = 0

    with keyed_client(limited.base_url, "wrong") as stranger:
        assert stranger.post(CREATE, json=body()).status_code == 401
    assert limited_client.post(CREATE, json={"model": "flux-2-max"}).status_code == 422
    _refused(limited_client.post(CREATE, json=body()))  # not 402: nothing would be charged

    assert limited.stats.rate_limited_creates == 1


def test_a_fault_answering_429_is_not_counted_as_the_limit(
    limited: FakeFluxServer, limited_client: httpx.Client
) -> None:
    limited.add_fault(Fault(endpoint="create", status=429, retry_after=7))

    faulted = limited_client.post(CREATE, json=body())

    assert (faulted.status_code, faulted.headers["retry-after"]) == (429, "7")
    assert limited.stats.rate_limited_creates == 0
    assert limited.in_flight == 0


def test_the_limit_and_retry_after_are_settable(
    limited: FakeFluxServer, limited_client: httpx.Client
) -> None:
    create(limited_client)
    create(limited_client)
    limited.rate_limit_retry_after = 2.5
    _refused(limited_client.post(CREATE, json=body()), retry_after="2.5")

    limited.max_in_flight = 3
    create(limited_client)
    limited.max_in_flight = 1  # lower than the tasks in flight: they run on, creates wait
    _refused(limited_client.post(CREATE, json=body()), retry_after="2.5")
    limited.max_in_flight = None
    create(limited_client)

    assert (limited.max_in_flight, limited.rate_limit_retry_after) == (None, 2.5)
    assert limited.in_flight == 4
    assert limited.stats.peak_in_flight == 4


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "2"])
def test_a_limit_that_is_not_a_whole_number_from_1_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        FakeFluxServer(max_in_flight=limit)  # type: ignore[arg-type]
    server = FakeFluxServer()
    with pytest.raises(ValueError, match="max_in_flight"):
        server.max_in_flight = limit  # type: ignore[assignment]
    assert server.max_in_flight is None


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_a_retry_after_that_is_not_seconds_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="rate_limit_retry_after"):
        FakeFluxServer(rate_limit_retry_after=seconds)
    server = FakeFluxServer()
    with pytest.raises(ValueError, match="rate_limit_retry_after"):
        server.rate_limit_retry_after = seconds
    assert server.rate_limit_retry_after == 1.0


def test_reset_stats_starts_the_peak_from_the_tasks_in_flight(
    limited: FakeFluxServer, limited_client: httpx.Client
) -> None:
    first = create(limited_client)
    create(limited_client)
    limited.complete(first)

    limited.reset_stats()

    assert (limited.stats.peak_in_flight, limited.stats.rate_limited_creates) == (1, 0)


# -- concurrent creates ----------------------------------------------------------------------


def _create_at_once(base_url: str, count: int) -> list[int]:
    """``count`` creates sent together from as many threads, each on its own connection."""
    start = threading.Barrier(count)

    def one(_: int) -> int:
        with keyed_client(base_url) as http:
            start.wait(WAIT)
            return http.post(CREATE, json=body()).status_code

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_creates_never_exceed_the_limit() -> None:
    with FakeFluxServer(api_key=KEY, duration=3600, max_in_flight=5) as fake:
        statuses = _create_at_once(fake.base_url, 40)

        assert sorted(statuses) == [200] * 5 + [429] * 35
        stats = fake.stats
        assert (stats.tasks_created, stats.rate_limited_creates) == (5, 35)
        assert (stats.peak_in_flight, fake.in_flight, len(fake.tasks)) == (5, 5, 5)


def test_the_peak_counts_concurrent_creates_without_a_limit() -> None:
    with FakeFluxServer(api_key=KEY, duration=3600) as fake:
        statuses = _create_at_once(fake.base_url, 24)

        assert statuses == [200] * 24
        assert (fake.stats.peak_in_flight, fake.stats.rate_limited_creates) == (24, 0)


# -- command line and child process ----------------------------------------------------------


def test_the_command_line_limits_and_reports_in_flight_tasks() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flux_provider.testing",
            "--max-in-flight",
            "1",
            "--rate-limit-retry-after",
            "3",
            "--duration",
            "3600",
            "--stdin-control",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        base_url = process.stdout.readline().split()[-1]
        process.stdout.readline()  # the connection line
        with keyed_client(base_url, "fake-key") as http:
            create(http)
            refused = http.post(CREATE, json=body())
        process.stdin.write("stats\n")
        process.stdin.flush()
        stats = json.loads(process.stdout.readline())
    finally:
        process.stdin.close()
        assert process.wait(timeout=WAIT * 6) == 0
        process.stdout.close()

    _refused(refused, retry_after="3")
    assert (stats["tasks_created"], stats["rate_limited_creates"]) == (1, 1)
    assert (stats["peak_in_flight"], stats["in_flight"]) == (1, 1)


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_the_command_line_refuses_a_limit_below_1(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flux_provider.testing", "--max-in-flight", value],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=WAIT * 6,
        check=False,
    )

    assert result.returncode == 2
    assert "--max-in-flight" in result.stderr
    assert result.stdout == ""


def test_the_child_process_takes_the_limit() -> None:
    with (
        FakeFluxProcess(duration=3600, max_in_flight=2, rate_limit_retry_after=0.5) as fake,
        keyed_client(fake.base_url, fake.api_key) as http,
    ):
        create(http)
        create(http)
        refused = http.post(CREATE, json=body())
        balance = http.get(BALANCE).json()["data"]["balance"]
        ended = fake.complete_all()
        create(http)
        stats = fake.take_stats()

    _refused(refused, retry_after="0.5")
    assert balance == 1_000_000 - 2 * 6
    assert ended == 2
    assert (stats["tasks_created"], stats["rate_limited_creates"]) == (3, 1)
    assert (stats["peak_in_flight"], stats["in_flight"]) == (2, 1)
    assert fake.argv[-2:] == ["--max-in-flight", "2"]
