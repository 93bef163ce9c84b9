"""The sync and async clients against the embedded fake API over real loopback HTTP."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from flux_provider.api.client import AsyncFluxClient, FluxClient
from flux_provider.api.config import ClientConfig
from flux_provider.api.errors import (
    AuthenticationError,
    FeatureDisabledError,
    FluxError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidInputError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    TaskTimeoutError,
    TransportError,
)
from flux_provider.api.models import TaskInfo, TaskState
from flux_provider.api.retry import RetryPolicy
from flux_provider.testing import RESULT_SHAPES, FakeFluxServer, FakeTaskStatus, Fault

KEY = "sk-live-0123456789-abcdef-SECRET"
PROMPT = {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "seed": 7}

STATUS_TABLE: list[tuple[int, type[FluxError], bool]] = [
    (401, AuthenticationError, False),
    (403, AuthenticationError, False),
    (402, InsufficientCreditsError, False),
    (404, NotFoundError, False),
    (422, InvalidRequestError, False),
    (429, RateLimitedError, True),
    (455, ServiceUnavailableError, True),
    (500, ServerError, True),
    (501, GenerationFailedError, True),
    (505, FeatureDisabledError, False),
]


class RecordingSleep:
    """Records the delays the client asked for instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def server() -> Iterator[FakeFluxServer]:
    with FakeFluxServer(api_key=KEY, duration=0.3) as fake:
        yield fake


def _config(server: FakeFluxServer, **overrides: object) -> ClientConfig:
    options: dict[str, object] = {"api_key": KEY, "base_url": server.base_url}
    options.update(overrides)
    return ClientConfig(**options)  # type: ignore[arg-type]


def _finished_behind(server: FakeFluxServer, fault: Fault) -> str:
    """The id of a task the fake has finished; ``fault`` answers the first requests for it."""
    flux_task_id = server.submit(PROMPT)
    server.complete(flux_task_id)
    server.add_fault(fault)
    return flux_task_id


def _retryable_failure(info: TaskInfo) -> str:
    """The text of the failure ``info`` reports, which must be one a retry can fix."""
    failure = info.failure()
    assert failure is not None
    assert failure.retryable
    return str(failure)


@pytest.fixture
def sleeper() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def client(server: FakeFluxServer, sleeper: RecordingSleep) -> Iterator[FluxClient]:
    with FluxClient(_config(server), sleep=sleeper, rng=random.Random(1)) as flux:
        yield flux


def test_sync_success_path(server: FakeFluxServer) -> None:
    with FluxClient(_config(server)) as flux:
        flux_task_id = flux.create_task(PROMPT)
        info = flux.wait_for_task(flux_task_id, poll_interval=0.05, timeout=10)
    assert info.state is TaskState.SUCCESS
    assert info.flux_task_id == flux_task_id
    assert len(info.result_urls) == 1
    assert info.result_urls[0].startswith(server.base_url)
    assert info.credits == 6
    assert info.created_at is not None
    assert info.completed_at is not None
    assert info.duration_s is not None
    assert server.tasks[flux_task_id].input == PROMPT
    assert server.stats.create_requests == 1
    assert server.stats.poll_requests >= 1


async def test_async_success_path(server: FakeFluxServer) -> None:
    async with AsyncFluxClient(_config(server)) as flux:
        flux_task_id = await flux.create_task(PROMPT, callback_url="https://hooks.example/done")
        server.complete(flux_task_id)
        info = await flux.get_task(flux_task_id)
    assert info.state is TaskState.SUCCESS
    assert info.result_urls
    assert server.tasks[flux_task_id].callback_url == "https://hooks.example/done"


async def test_the_async_wait_takes_the_sync_waits_arguments(server: FakeFluxServer) -> None:
    async with AsyncFluxClient(_config(server)) as flux:
        flux_task_id = await flux.create_task(PROMPT)
        info = await flux.wait_for_task(flux_task_id, poll_interval=0.05, timeout=10)
    assert info.state is TaskState.SUCCESS
    assert info.flux_task_id == flux_task_id


def test_one_pooled_connection_is_reused(server: FakeFluxServer) -> None:
    with FluxClient(_config(server)) as flux:
        flux_task_id = flux.create_task(PROMPT)
        for _ in range(5):
            flux.get_task(flux_task_id)
    ports = {request.client_port for request in server.stats.requests}
    assert len(ports) == 1


@pytest.mark.parametrize(("code", "error_class", "retryable"), STATUS_TABLE)
def test_every_status_code_maps_to_its_error(
    server: FakeFluxServer,
    client: FluxClient,
    code: int,
    error_class: type[FluxError],
    retryable: bool,
) -> None:
    server.add_fault(Fault(endpoint="create", status=code, message=f"boom {code}", times=None))
    with pytest.raises(error_class) as info:
        client.create_task(PROMPT)
    assert info.value.retryable is retryable
    assert info.value.status_code == code
    assert info.value.server_message == f"boom {code}"
    # Refusals are retried by the client (bounded); everything else is sent once.
    expected = client.config.retry.max_attempts if code in (429, 455, 500) else 1
    assert server.stats.create_requests == expected


@pytest.mark.parametrize(("code", "error_class", "retryable"), STATUS_TABLE)
async def test_every_status_code_maps_to_its_error_async(
    server: FakeFluxServer,
    sleeper: RecordingSleep,
    code: int,
    error_class: type[FluxError],
    retryable: bool,
) -> None:
    flux_task_id = server.submit(PROMPT)
    server.add_fault(Fault(endpoint="poll", status=code, times=None))
    async with AsyncFluxClient(_config(server), sleep=sleeper.asleep) as flux:
        with pytest.raises(error_class) as info:
            await flux.get_task(flux_task_id)
    assert info.value.retryable is retryable
    assert info.value.flux_task_id == flux_task_id


def test_body_code_beats_http_status(server: FakeFluxServer, client: FluxClient) -> None:
    server.add_fault(Fault(endpoint="create", body_code=500, times=None))
    with pytest.raises(ServerError):
        client.create_task(PROMPT)


def test_retry_after_is_honoured_then_recovers(
    server: FakeFluxServer, client: FluxClient, sleeper: RecordingSleep
) -> None:
    server.add_fault(Fault(endpoint="create", status=429, retry_after=7, times=2))
    flux_task_id = client.create_task(PROMPT)
    assert flux_task_id in server.tasks
    assert sleeper.delays == [7.0, 7.0]
    assert server.stats.create_requests == 3
    assert server.stats.tasks_created == 1


def test_backoff_grows_with_jitter_when_no_retry_after(
    server: FakeFluxServer, sleeper: RecordingSleep
) -> None:
    server.add_fault(Fault(endpoint="poll", status=455, times=3))
    flux_task_id = server.submit(PROMPT)
    policy = RetryPolicy(max_attempts=4, backoff_initial=1.0, backoff_max=30.0)
    with FluxClient(_config(server, retry=policy), sleep=sleeper, rng=random.Random(3)) as flux:
        flux.get_task(flux_task_id)
    assert len(sleeper.delays) == 3
    for attempt, delay in enumerate(sleeper.delays, start=1):
        ceiling = 2 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling


def test_malformed_json_is_a_clear_error(server: FakeFluxServer, client: FluxClient) -> None:
    flux_task_id = server.submit(PROMPT)
    server.add_fault(Fault(endpoint="poll", malformed=True, times=None))
    with pytest.raises(MalformedResponseError, match="not JSON"):
        client.get_task(flux_task_id)


def test_dropped_connection_is_a_transport_error(
    server: FakeFluxServer, client: FluxClient
) -> None:
    flux_task_id = server.submit(PROMPT)
    server.add_fault(Fault(endpoint="poll", drop=True, times=None))
    with pytest.raises(TransportError):
        client.get_task(flux_task_id)


def test_ambiguous_create_failure_is_not_resent(server: FakeFluxServer, client: FluxClient) -> None:
    """A reset after the POST was sent may have created a task: never resend blindly."""
    server.add_fault(Fault(endpoint="create", drop=True, times=1))
    with pytest.raises(TransportError) as info:
        client.create_task(PROMPT)
    assert info.value.retryable
    assert server.stats.create_requests == 1


def test_gets_are_resent_after_a_drop(server: FakeFluxServer, client: FluxClient) -> None:
    flux_task_id = server.submit(PROMPT)
    server.add_fault(Fault(endpoint="poll", drop=True, times=2))
    assert client.get_task(flux_task_id).flux_task_id == flux_task_id
    assert server.stats.poll_requests == 3


def test_wrong_key_is_401(server: FakeFluxServer) -> None:
    with FluxClient(ClientConfig(api_key="wrong", base_url=server.base_url)) as flux:
        with pytest.raises(AuthenticationError):
            flux.create_task(PROMPT)
    assert server.stats.tasks_created == 0


def test_bearer_auth_header_option() -> None:
    with FakeFluxServer(api_key=KEY, auth_header="Authorization") as fake:
        config = ClientConfig(api_key=KEY, base_url=fake.base_url, auth_header="Authorization")
        with FluxClient(config) as flux:
            assert flux.create_task(PROMPT) in fake.tasks


def test_configurable_paths(server: FakeFluxServer) -> None:
    with FluxClient(_config(server, create_path="/v2/create")) as flux:
        with pytest.raises(NotFoundError):
            flux.create_task(PROMPT)


def test_bad_input_sends_nothing(server: FakeFluxServer, client: FluxClient) -> None:
    with pytest.raises(InvalidInputError, match="aspect_ratio"):
        client.create_task({"prompt": "x", "aspect_ratio": "7x5"})
    with pytest.raises(InvalidInputError, match="callback_url"):
        client.create_task(PROMPT, callback_url="ftp://example.com/cb")
    assert server.stats.requests == []


def test_generation_failure_is_reported_in_the_info(
    server: FakeFluxServer, client: FluxClient
) -> None:
    server.fail_next_tasks(1, code=501, message="upstream GPU error")
    flux_task_id = client.create_task(PROMPT)
    info = client.wait_for_task(flux_task_id, poll_interval=0.01, timeout=5)
    assert info.state is TaskState.FAILED
    assert info.fail_code == "501"
    assert "upstream GPU error" in _retryable_failure(info)


def test_wait_times_out_with_state_and_id(server: FakeFluxServer) -> None:
    now = [1000.0]

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    server.duration = 3600
    flux_task_id = server.submit(PROMPT)
    with FluxClient(_config(server), sleep=sleep, clock=clock) as flux:
        with pytest.raises(TaskTimeoutError) as info:
            flux.wait_for_task(flux_task_id, timeout=20)
    message = str(info.value)
    assert flux_task_id in message
    assert "last state: pending" in message
    assert "waited 20 s for flux task" in message
    assert info.value.retryable


def test_wait_absorbs_transient_poll_errors(
    server: FakeFluxServer, sleeper: RecordingSleep
) -> None:
    flux_task_id = _finished_behind(server, Fault(endpoint="poll", status=502, times=3))
    with FluxClient(_config(server), sleep=sleeper) as flux:
        info = flux.wait_for_task(flux_task_id, timeout=600)
    assert info.state is TaskState.SUCCESS
    assert server.stats.poll_requests == 4


def test_wait_gives_up_after_too_many_errors_in_a_row(
    server: FakeFluxServer, sleeper: RecordingSleep
) -> None:
    flux_task_id = server.submit(PROMPT)
    server.add_fault(Fault(endpoint="poll", status=500, times=None))
    with FluxClient(_config(server), sleep=sleeper) as flux:
        with pytest.raises(ServerError, match="in a row"):
            flux.wait_for_task(flux_task_id, timeout=3600)
    assert server.stats.poll_requests == 6


def test_not_found_right_after_create_is_tolerated(
    server: FakeFluxServer, sleeper: RecordingSleep
) -> None:
    flux_task_id = _finished_behind(server, Fault(endpoint="poll", status=404, times=2))
    with FluxClient(_config(server), sleep=sleeper) as flux:
        assert flux.wait_for_task(flux_task_id, timeout=600).state is TaskState.SUCCESS


def test_oversized_answer_is_refused(server: FakeFluxServer) -> None:
    flux_task_id = server.submit(PROMPT)
    with FluxClient(_config(server, max_response_bytes=200)) as flux:
        with pytest.raises(MalformedResponseError, match="over the 200 bytes limit"):
            flux.get_task(flux_task_id)


def test_key_never_in_exception_text_or_repr(server: FakeFluxServer) -> None:
    server.add_fault(Fault(endpoint="create", status=401, message=f"bad key {KEY}", times=None))
    config = _config(server)
    with FluxClient(config) as flux:
        with pytest.raises(AuthenticationError) as info:
            flux.create_task(PROMPT)
        texts = [str(info.value), repr(info.value), repr(flux), repr(config)]
    assert info.value.server_message == "bad key ***"
    for text in texts:
        assert KEY not in text


def test_403_for_a_disabled_key_is_not_retried(server: FakeFluxServer, client: FluxClient) -> None:
    server.disable_key()
    with pytest.raises(AuthenticationError) as info:
        client.create_task(PROMPT)
    assert info.value.status_code == 403
    assert not info.value.retryable
    assert server.stats.create_requests == 1


def test_balance_and_estimate(server: FakeFluxServer, client: FluxClient) -> None:
    server.balance = 250
    assert client.get_balance() == 250
    assert client.estimate_credits(PROMPT) == 6
    assert client.estimate_credits({**PROMPT, "resolution": "2K"}) == 12
    assert (server.stats.balance_requests, server.stats.estimate_requests) == (1, 2)
    assert server.stats.tasks_created == 0
    assert server.balance == 250


def test_insufficient_credits_on_create(server: FakeFluxServer, client: FluxClient) -> None:
    server.balance = 5
    with pytest.raises(InsufficientCreditsError):
        client.create_task(PROMPT)
    assert server.stats.tasks_created == 0


def test_reference_images_travel_as_img_urls(server: FakeFluxServer, client: FluxClient) -> None:
    urls = ["https://img.example/a.png", "data:image/png;base64,iVBORw0KGgo="]
    flux_task_id = client.create_task({**PROMPT, "input_urls": urls})
    assert server.tasks[flux_task_id].input == {**PROMPT, "img_urls": urls}


@pytest.mark.parametrize(
    "words",
    [
        {"pending": "queued", "running": "processing", "success": "succeeded"},
        {"pending": "WAITING", "running": "In_Progress", "success": "COMPLETED"},
        {"pending": "submitted", "running": "generating", "success": "done"},
    ],
)
def test_other_status_words(words: dict[FakeTaskStatus, str]) -> None:
    with FakeFluxServer(api_key=KEY, duration=0.2, status_words=words) as fake:
        with FluxClient(_config(fake)) as flux:
            flux_task_id = flux.create_task(PROMPT)
            seen = {flux.get_task(flux_task_id).raw_state}
            info = flux.wait_for_task(flux_task_id, poll_interval=0.02, timeout=10)
    assert info.state is TaskState.SUCCESS
    assert info.raw_state == words["success"]
    assert seen <= {words["pending"], words["running"]}


@pytest.mark.parametrize("shape", [s for s in RESULT_SHAPES if s != "empty"])
def test_every_result_shape_of_the_fake(shape: str) -> None:
    with FakeFluxServer(api_key=KEY, duration=0, result_shape=shape) as fake:  # type: ignore[arg-type]
        with FluxClient(_config(fake)) as flux:
            flux_task_id = flux.create_task(PROMPT)
            info = flux.get_task(flux_task_id)
    assert info.result_urls == [f"{fake.base_url}/files/{flux_task_id}/0.png"]
    assert info.failure() is None


def test_success_without_urls_is_a_retryable_error(server: FakeFluxServer) -> None:
    server.result_shape = "empty"
    with FluxClient(_config(server)) as flux:
        flux_task_id = flux.create_task(PROMPT)
        info = flux.wait_for_task(flux_task_id, poll_interval=0.02, timeout=10)
    assert flux_task_id in _retryable_failure(info)


@pytest.mark.parametrize(
    "shape", ["result", "error_message", "fail_msg", "error_string", "error_object"]
)
def test_every_failure_shape_of_the_fake(shape: str) -> None:
    with FakeFluxServer(api_key=KEY, duration=0, failure_shape=shape) as fake:  # type: ignore[arg-type]
        fake.fail_next_tasks(1, code=501, message="the GPU melted")
        with FluxClient(_config(fake)) as flux:
            info = flux.get_task(flux.create_task(PROMPT))
    assert info.state is TaskState.FAILED
    assert info.fail_msg == "the GPU melted"
    assert "the GPU melted" in _retryable_failure(info)


def test_envelope_with_msg(server: FakeFluxServer) -> None:
    with FakeFluxServer(api_key=KEY, message_key="msg") as fake:
        fake.add_fault(Fault(endpoint="create", status=422, message="bad prompt"))
        with FluxClient(_config(fake)) as flux, pytest.raises(InvalidRequestError) as info:
            flux.create_task(PROMPT)
    assert info.value.server_message == "bad prompt"
