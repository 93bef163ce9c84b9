"""Callbacks: the fake POSTs an ended task's ``TaskInfo`` data (or envelope) to ``callback_url``."""

from __future__ import annotations

import httpx

from flux_provider.testing import FakeFluxServer
from tests.support.fake import (
    KEY,
    WAIT,
    CallbackSink,
    FakeClock,
    body,
    create,
    http_client,
    task_info,
)


def test_callback_is_posted_once_when_the_task_ends(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock, sink: CallbackSink
) -> None:
    task_id = create(client, {**body(), "callback_url": sink.url})

    assert task_info(client, task_id)["status"] == "pending"
    assert server.stats.callbacks_sent == 0
    clock.advance(3.0)
    data = task_info(client, task_id)  # with an injected clock, observing the end sends it

    assert sink.received.wait(WAIT)
    assert sink.bodies == [data]
    assert data["param"]["callback_url"] == sink.url
    task_info(client, task_id)
    server.state_of(task_id)
    assert server.stats.callbacks_sent == 1


def test_callback_fires_on_time_without_polling(sink: CallbackSink) -> None:
    with (
        FakeFluxServer(api_key=KEY, duration=0.1) as fake,
        http_client(fake, **{"x-api-key": KEY}) as http,
    ):
        task_id = create(http, {**body(), "callback_url": sink.url})

        assert sink.received.wait(WAIT)
        assert fake.stats.poll_requests == 0
        assert fake.stats.callbacks_sent == 1

    (sent,) = sink.bodies
    assert sent["task_id"] == task_id
    assert sent["status"] == "success"
    assert sent["result"]["media_urls"] == [f"{fake.base_url}/files/{task_id}/0.png"]


def test_callback_reports_failures(server: FakeFluxServer, sink: CallbackSink) -> None:
    task_id = server.submit({"prompt": "x"}, callback_url=sink.url)

    server.fail(task_id, code=501, message="rejected")

    assert sink.received.wait(WAIT)
    (sent,) = sink.bodies
    assert sent["task_id"] == task_id
    assert sent["status"] == "failed"
    assert sent["result"] == {"code": 501, "message": "rejected"}
    assert sent["credits"] == 0


def test_callback_envelope_posts_the_whole_answer(clock: FakeClock, sink: CallbackSink) -> None:
    with (
        FakeFluxServer(api_key=KEY, duration=3.0, clock=clock, callback_envelope=True) as fake,
        http_client(fake, **{"x-api-key": KEY}) as http,
    ):
        task_id = create(http, {**body(), "callback_url": sink.url})
        clock.advance(3.0)
        data = task_info(http, task_id)

        assert sink.received.wait(WAIT)

    assert sink.bodies == [{"code": 200, "message": "success", "data": data}]


def test_callback_envelope_follows_the_message_key(clock: FakeClock, sink: CallbackSink) -> None:
    with FakeFluxServer(
        api_key=KEY, clock=clock, callback_envelope=True, message_key="msg"
    ) as fake:
        task_id = fake.submit({"prompt": "x"}, callback_url=sink.url)
        fake.complete(task_id)

        assert sink.received.wait(WAIT)

    (sent,) = sink.bodies
    assert set(sent) == {"code", "msg", "data"}
    assert sent["data"]["task_id"] == task_id


def test_callback_data_follows_the_wire_options(clock: FakeClock, sink: CallbackSink) -> None:
    with (
        FakeFluxServer(
            api_key=KEY,
            duration=3.0,
            clock=clock,
            status_words={"success": "SUCCEEDED"},
            result_shape="url_list",
        ) as fake,
        http_client(fake, **{"x-api-key": KEY}) as http,
    ):
        task_id = create(http, {**body(), "callback_url": sink.url})
        clock.advance(3.0)
        data = task_info(http, task_id)

        assert sink.received.wait(WAIT)

    assert sink.bodies == [data]
    assert data["status"] == "SUCCEEDED"
    assert data["result"] == [f"{fake.base_url}/files/{task_id}/0.png"]


def test_non_loopback_callbacks_are_never_called(
    server: FakeFluxServer, client: httpx.Client, clock: FakeClock
) -> None:
    task_id = create(client, {**body(), "callback_url": "http://203.0.113.7/hook"})
    clock.advance(3.0)

    assert task_info(client, task_id)["status"] == "success"
    assert server.tasks[task_id].callback_url == "http://203.0.113.7/hook"
    assert server.stats.callbacks_sent == 0
