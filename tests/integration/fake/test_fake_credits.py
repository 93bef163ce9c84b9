"""The fake's account: balance, charges, 402, refunds of failed tasks, and the credit estimate."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flux_provider.testing import FakeFluxServer, Fault
from tests.support.fake import BALANCE, CREATE, ESTIMATE, KEY, FakeClock, body, create, task_info


def _balance(http: httpx.Client) -> float:
    response = http.get(BALANCE)
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert (envelope["code"], envelope["message"]) == (200, "success")
    assert set(envelope["data"]) == {"balance"}
    value: float = envelope["data"]["balance"]
    return value


# -- balance and charges ---------------------------------------------------------------------


def test_balance_starts_large_and_each_task_is_charged(
    server: FakeFluxServer, client: httpx.Client
) -> None:
    assert _balance(client) == 1_000_000

    create(client)
    assert _balance(client) == 1_000_000 - 6
    create(client, body(resolution="2K"))
    assert _balance(client) == 1_000_000 - 6 - 12
    create(client, body(resolution="2k"))
    assert _balance(client) == server.balance == 1_000_000 - 6 - 12 - 12


def test_task_info_credits_are_what_the_task_cost(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    small, large = create(client, body(resolution="1K")), create(client, body(resolution="2K"))

    assert task_info(client, small)["credits"] is None  # still running
    clock.advance(3.0)

    assert task_info(client, small)["credits"] == 6.0
    assert task_info(client, large)["credits"] == 12.0
    assert server.tasks[large].credits == 12.0


def test_credits_per_image_is_configurable(clock: FakeClock) -> None:
    with (
        FakeFluxServer(api_key=KEY, credits_per_image=2.5, balance=10, clock=clock) as fake,
        httpx.Client(base_url=fake.base_url, headers={"x-api-key": KEY}, trust_env=False) as http,
    ):
        create(http, body(resolution="2K"))

        assert fake.credits_per_image == 2.5
        assert _balance(http) == 5.0


def test_a_task_the_balance_cannot_pay_is_402_and_not_created(
    server: FakeFluxServer, client: httpx.Client
) -> None:
    server.balance = 11

    paid = create(client)
    refused = client.post(CREATE, json=body())
    refused_large = client.post(CREATE, json=body(resolution="2K"))
    server.balance = 5.99
    refused_small = client.post(CREATE, json=body())

    assert refused.status_code == refused_large.status_code == refused_small.status_code == 402
    assert refused.json() == {"code": 402, "message": "insufficient credits", "data": None}
    assert list(server.tasks) == [paid]
    assert server.stats.create_requests == 4
    assert server.stats.tasks_created == 1
    assert _balance(client) == 5.99


def test_the_exact_balance_pays(server: FakeFluxServer, client: httpx.Client) -> None:
    server.balance = 6

    create(client)

    assert _balance(client) == 0
    assert client.post(CREATE, json=body()).status_code == 402


def test_balance_setter_rejects_nonsense(server: FakeFluxServer) -> None:
    for value in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="balance"):
            server.balance = value
    with pytest.raises(ValueError, match="credits_per_image"):
        FakeFluxServer(credits_per_image=-6)
    assert server.balance == 1_000_000


def test_submitted_tasks_are_not_charged(server: FakeFluxServer, clock: FakeClock) -> None:
    server.balance = 0

    task_id = server.submit({"prompt": "made elsewhere"})
    clock.advance(3.0)

    assert server.state_of(task_id) == "success"
    assert server.balance == 0


# -- refunds ---------------------------------------------------------------------------------


def test_a_failed_task_is_refunded_when_it_ends(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    server.fail_next_tasks(1)
    failing = create(client, body(resolution="2K"))
    create(client)

    assert _balance(client) == 1_000_000 - 18  # both paid while they run
    clock.advance(2.9)
    assert _balance(client) == 1_000_000 - 18
    clock.advance(0.1)
    assert _balance(client) == 1_000_000 - 6
    assert task_info(client, failing)["credits"] == 0
    assert _balance(client) == 1_000_000 - 6  # refunded once only


def test_fail_refunds_at_once_and_complete_does_not(
    server: FakeFluxServer, client: httpx.Client
) -> None:
    server.fail_next_tasks(1)
    rescued, broken = create(client), create(client)

    server.complete(rescued)  # planned to fail, made to succeed: it keeps its cost
    server.fail(broken)

    assert _balance(client) == 1_000_000 - 6
    assert server.tasks[rescued].credits == 6.0
    assert server.tasks[broken].credits == 0


def test_a_refund_counts_towards_the_next_create(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    server.balance = 6
    server.fail_next_tasks(1)
    create(client)
    assert client.post(CREATE, json=body()).status_code == 402

    clock.advance(3.0)  # the failure ends: its 6 credits come back

    assert client.post(CREATE, json=body()).status_code == 200


def test_setting_the_balance_keeps_refunds_of_running_tasks(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    server.fail_next_tasks(1)
    create(client)
    server.balance = 100

    clock.advance(3.0)

    assert server.balance == 106


# -- estimate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_input", "credits"), [({}, 6.0), ({"resolution": "2K"}, 12.0), ({"seed": 1}, 6.0)]
)
def test_estimate_is_what_create_would_charge(
    server: FakeFluxServer, client: httpx.Client, task_input: dict[str, Any], credits: float
) -> None:
    payload = body(**task_input)

    response = client.post(ESTIMATE, json=payload)

    assert response.status_code == 200
    assert response.json() == {
        "code": 200,
        "message": "success",
        "data": {"credits": credits, "estimated": False},
    }
    assert server.tasks == {}
    assert server.balance == 1_000_000
    create(client, payload)
    assert server.balance == 1_000_000 - credits


def test_estimate_works_when_the_balance_cannot_pay(
    server: FakeFluxServer, client: httpx.Client
) -> None:
    server.balance = 0

    response = client.post(ESTIMATE, json=body())

    assert response.json()["data"] == {"credits": 6.0, "estimated": False}


def test_estimate_endpoint_can_be_switched_off() -> None:
    with (
        FakeFluxServer(api_key=KEY, estimate_endpoint=False) as fake,
        httpx.Client(base_url=fake.base_url, headers={"x-api-key": KEY}, trust_env=False) as http,
    ):
        fake.add_fault(Fault("any", status=500))
        response = http.post(ESTIMATE, json=body())
        faulted = http.post(CREATE, json=body())  # the unknown route left the fault queued
        stats = fake.stats

    assert response.status_code == 404
    assert response.json() == {"code": 404, "message": "not found", "data": None}
    assert faulted.status_code == 500
    assert stats.estimate_requests == 0
    assert stats.requests[0].path == ESTIMATE  # still in the request log
