"""The ``flux.*`` metrics, read by a real StatsD listener on loopback from Airflow's ``Stats``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flux_provider.api.errors import GenerationFailedError, NoResultError, TaskTimeoutError
from flux_provider.metrics import failure_kind
from flux_provider.testing import FakeFluxServer
from tests.conftest import load_dag
from tests.support.statsd import StatsdListener, stats_sent_to

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    with StatsdListener() as listener, stats_sent_to(listener):
        yield listener


def _until(condition: Callable[[], bool], listener: StatsdListener, seconds: float = 10.0) -> None:
    """UDP is not acknowledged: wait (bounded) until what was sent has arrived."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            flux = [line for line in listener.lines if ".flux." in line]
            raise AssertionError(f"the metrics never arrived; flux lines: {flux}")
        time.sleep(0.05)


def test_a_generation_counts_its_submission_credits_images_and_times(
    fake_api: FakeFluxServer, statsd: StatsdListener, tmp_path: Path
) -> None:
    run = load_dag("flux_text_to_image").test(run_conf={"output_dir": str(tmp_path)})
    assert run.state == "success"
    _until(lambda: statsd.total("airflow.flux.images.stored") == 1, statsd)
    assert statsd.total("airflow.flux.generations.submitted") == 1
    assert statsd.total("airflow.flux.generations.succeeded") == 1
    assert statsd.total("airflow.flux.credits") == 6
    (image,) = tmp_path.glob("*.png")
    assert statsd.total("airflow.flux.images.bytes") == image.stat().st_size
    assert [kind for _, kind in statsd.values("airflow.flux.generation.duration")] == ["ms"]
    assert [kind for _, kind in statsd.values("airflow.flux.image.ready_to_stored")] == ["ms"]
    assert statsd.values("airflow.flux.generations.failed") == []


def test_a_batch_counts_every_item_from_the_trigger(
    fake_api: FakeFluxServer, statsd: StatsdListener, tmp_path: Path
) -> None:
    fake_api.fail_next_tasks(1, code=400, message="NSFW content detected")
    prompts = [f"item {n}" for n in range(4)]
    run = load_dag("flux_batch_test_tolerant").test(
        run_conf={"prompts": prompts, "out": str(tmp_path)}
    )
    assert run.state == "success"
    _until(lambda: statsd.total("airflow.flux.images.stored") == 3, statsd)
    assert statsd.total("airflow.flux.generations.submitted") == 4
    assert statsd.total("airflow.flux.generations.succeeded") == 3
    assert statsd.total("airflow.flux.generations.failed") == 1
    assert statsd.total("airflow.flux.credits") == 18


def test_a_reused_generation_is_counted_and_costs_nothing(
    fake_api: FakeFluxServer, statsd: StatsdListener, tmp_path: Path
) -> None:
    conf = {"prompt": "a teapot", "seed": 3, "out": str(tmp_path)}
    for _ in range(2):
        assert load_dag("flux_test_reuse").test(run_conf=conf).state == "success"
    _until(lambda: statsd.total("airflow.flux.reused") == 1, statsd)
    assert statsd.total("airflow.flux.generations.submitted") == 1
    assert statsd.total("airflow.flux.credits") == 6


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (GenerationFailedError("failed", retryable=True), "generation"),
        (GenerationFailedError("refused", retryable=False), "moderation"),
        (NoResultError("no url"), "no_result"),
        (TaskTimeoutError("late"), "timeout"),
    ],
)
def test_failure_kinds(error: Exception, kind: str) -> None:
    assert failure_kind(error) == kind  # type: ignore[arg-type]


def test_a_metric_that_cannot_be_sent_never_fails_the_task(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The Stats flux_provider.metrics sends through.
    from airflow.providers.common.compat.sdk import Stats

    from flux_provider import metrics
    from flux_provider.api.models import TaskInfo, TaskState

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("no route to the StatsD host")

    monkeypatch.setattr(Stats, "incr", broken)
    monkeypatch.setattr(Stats, "timing", broken)
    info = TaskInfo(
        flux_task_id="t_1",
        state=TaskState.SUCCESS,
        result_urls=["https://cdn.example/a.png"],
        credits=1e300,
        duration_s=1e308,
    )
    metrics.FluxMetrics("dag", "task").ended(info)
    assert "Could not send the metric flux.generations.succeeded" in caplog.text
