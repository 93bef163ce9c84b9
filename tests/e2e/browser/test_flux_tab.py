"""The FLUX images tab and the run gallery in a real browser, on a real ``airflow standalone``.

Airflow runs with its simple auth manager and one password-protected user, so the browser signs
in through the login form and the plugin's pages and images are loaded with the UI's own
session. The text-to-image example and the mapped batch run against the fake API; Chromium
opens the finished task's page, clicks the "FLUX images" tab and finds the image decoded
(``naturalWidth > 0``), then opens the batch run's "FLUX gallery" tab and finds one decoded
image per map index. The screenshots go to ``FLUX_SCREENSHOT_DIR`` when it is set (the README's
come from ``make screenshots``), else to the test's temporary folder.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from devtools.standalone import StandaloneAirflow
from flux_provider.testing import FakeFluxServer
from tests.conftest import API_KEY, standalone_airflow
from tests.e2e.browser.support import CHROMIUM_ARGS, chromium_path, decoded_images
from tests.support.fake import prompt_of

pytestmark = pytest.mark.timeout(900)

USER = "reviewer"
PASSWORD = secrets.token_urlsafe(12)
TASKFLOW_BATCH_SUFFIX = "studio photo on white"
"""How the taskflow example's batch items end (they are not deferred tasks of their own)."""
RATIOS = {0: 16 / 9, 1: 9 / 16, 2: 1.0}
"""The aspect ratio of each mapped ``product_shot`` of the taskflow example."""
PROMPTS = [
    line.strip()
    for line in (Path(__file__).resolve().parents[3] / "example_dags/data/catalogue_prompts.txt")
    .read_text()
    .splitlines()
    if line.strip()
]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("FLUX_SCREENSHOT_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StandaloneAirflow, dict[str, str]]]:
    """Standalone Airflow with a signed-in user; one finished run of each DAG the tests open."""
    with (
        FakeFluxServer(api_key=API_KEY, duration=3600) as fake,
        standalone_airflow(
            tmp_path_factory.mktemp("ui-home"), fake, credentials=(USER, PASSWORD)
        ) as standalone,
    ):
        standalone.api("POST", "/api/v2/pools", json={"name": "flux_api", "slots": 4})
        output = tmp_path_factory.mktemp("ui-images")
        runs = {
            dag_id: standalone.trigger_dag(dag_id, conf={"output_dir": str(output / dag_id)})
            for dag_id in ("flux_text_to_image", "flux_mapped_batch", "flux_taskflow")
        }
        task_ids = {
            "flux_text_to_image": "generate_hero_image",
            "flux_mapped_batch": "generate",
            "flux_taskflow": "product_shot",
        }
        expected = 1 + len(PROMPTS) + 2 * len(RATIOS)
        ended: set[str] = set()
        while len(ended) < len(fake.tasks) or len(fake.tasks) < expected:
            # A batch's items are not deferred task instances: they end as soon as they exist.
            for flux_task_id, task in list(fake.tasks.items()):
                if prompt_of(task).endswith(TASKFLOW_BATCH_SUFFIX) and flux_task_id not in ended:
                    fake.complete(flux_task_id)
                    ended.add(flux_task_id)
            # End each generation once the scheduler heard its task deferred (apache/airflow#72716).
            for dag_id, run_id in runs.items():
                for ti in standalone.task_instances(dag_id, run_id):
                    if ti["task_id"] != task_ids[dag_id] or ti["state"] != "deferred":
                        continue
                    flux_task_id = standalone.xcom(
                        dag_id, run_id, ti["task_id"], key="flux_task_id", map_index=ti["map_index"]
                    )
                    if flux_task_id in ended or not standalone.deferral_released(
                        dag_id, run_id, ti["task_id"], ti["try_number"], map_index=ti["map_index"]
                    ):
                        continue
                    fake.complete(flux_task_id)
                    ended.add(flux_task_id)
            time.sleep(0.5)
        for dag_id, run_id in runs.items():
            assert standalone.wait_for_run(dag_id, run_id, timeout=300) == "success", (
                standalone.tail()
            )
        yield standalone, runs


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser: Browser, airflow: tuple[StandaloneAirflow, dict[str, str]]) -> Iterator[Page]:
    """A page signed in through Airflow's login form."""
    standalone, _ = airflow
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    signed_in = context.new_page()
    signed_in.goto(standalone.api_url + "/")
    signed_in.wait_for_url("**/auth/login**")
    signed_in.fill("input[name=username]", USER)
    signed_in.fill("input[name=password]", PASSWORD)
    signed_in.keyboard.press("Enter")
    signed_in.wait_for_url(lambda url: "/auth/login" not in url)
    assert any(cookie["name"] == "_token" for cookie in context.cookies())
    yield signed_in
    context.close()


def test_the_task_page_has_a_flux_images_tab_showing_the_image(
    page: Page, airflow: tuple[StandaloneAirflow, dict[str, str]], screenshots: Path
) -> None:
    standalone, runs = airflow
    run_id = runs["flux_text_to_image"]
    page.goto(
        f"{standalone.api_url}/dags/flux_text_to_image/runs/{quote(run_id, safe='')}"
        "/tasks/generate_hero_image"
    )
    page.get_by_role("link", name="FLUX images", exact=True).click()
    frame = page.frame_locator("iframe[title='FLUX images']")
    [width] = decoded_images(frame, 1)
    assert width > 0
    details = frame.locator("table").first.inner_text()
    flux_task_id = standalone.xcom("flux_text_to_image", run_id, "generate_hero_image")[
        "flux_task_id"
    ]
    assert flux_task_id in details
    assert "SHA-256" in details
    page.screenshot(path=str(screenshots / "flux-images-tab.png"))


def test_the_run_page_has_a_gallery_of_the_mapped_batch(
    page: Page, airflow: tuple[StandaloneAirflow, dict[str, str]], screenshots: Path
) -> None:
    standalone, runs = airflow
    run_id = runs["flux_mapped_batch"]
    page.goto(f"{standalone.api_url}/dags/flux_mapped_batch/runs/{quote(run_id, safe='')}")
    page.get_by_role("link", name="FLUX gallery", exact=True).click()
    frame = page.frame_locator("iframe[title='FLUX gallery']")
    widths = decoded_images(frame, len(PROMPTS))
    assert all(width > 0 for width in widths)
    labels = frame.locator(".card .label").all_inner_texts()
    assert labels == [f"generate [{index}]" for index in range(len(PROMPTS))]
    page.screenshot(path=str(screenshots / "flux-gallery.png"))


def _drawn_and_natural_ratios(frame: Any) -> list[tuple[float, float]]:
    return [
        tuple(ratios)
        for ratios in frame.locator("img").evaluate_all(
            "images => images.map(i => [i.clientWidth / i.clientHeight,"
            " i.naturalWidth / i.naturalHeight])"
        )
    ]


def test_images_keep_their_aspect_ratio_in_the_tab_and_the_gallery(
    page: Page, airflow: tuple[StandaloneAirflow, dict[str, str]], screenshots: Path
) -> None:
    standalone, runs = airflow
    run_id = quote(runs["flux_taskflow"], safe="")
    for map_index, ratio in RATIOS.items():
        page.goto(
            f"{standalone.api_url}/dags/flux_taskflow/runs/{run_id}/tasks/product_shot"
            f"/mapped/{map_index}"
        )
        page.get_by_role("link", name="FLUX images", exact=True).click()
        frame = page.frame_locator("iframe[title='FLUX images']")
        decoded_images(frame, 1)
        [(drawn, natural)] = _drawn_and_natural_ratios(frame)
        assert natural == pytest.approx(ratio, rel=0.02)
        assert drawn == pytest.approx(natural, rel=0.02), (map_index, drawn, natural)
    page.goto(f"{standalone.api_url}/dags/flux_taskflow/runs/{run_id}")
    page.get_by_role("link", name="FLUX gallery", exact=True).click()
    frame = page.frame_locator("iframe[title='FLUX gallery']")
    decoded_images(frame, 2 * len(RATIOS))
    for drawn, natural in _drawn_and_natural_ratios(frame):
        assert drawn == pytest.approx(natural, rel=0.02)
    # Captions wrap inside their card: nothing overflows it.
    overflowing = frame.locator(".card").evaluate_all(
        "cards => cards.filter(c => [...c.querySelectorAll('.label, .meta')]"
        ".some(e => e.scrollWidth > e.clientWidth + 1"
        " || e.getBoundingClientRect().right > c.getBoundingClientRect().right + 1)).length"
    )
    assert overflowing == 0
    page.screenshot(path=str(screenshots / "flux-gallery-taskflow.png"))


def test_a_task_that_makes_no_flux_images_says_so(
    page: Page, airflow: tuple[StandaloneAirflow, dict[str, str]]
) -> None:
    standalone, runs = airflow
    run_id = quote(runs["flux_mapped_batch"], safe="")
    page.goto(f"{standalone.api_url}/dags/flux_mapped_batch/runs/{run_id}/tasks/load_prompts")
    page.get_by_role("link", name="FLUX images", exact=True).click()
    frame = page.frame_locator("iframe[title='FLUX images']")
    frame.locator("p.note").wait_for(timeout=60_000)
    assert frame.locator("p.note").inner_text() == "This task (@task) makes no FLUX images."
