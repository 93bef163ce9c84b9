"""What the README promises after ``make demo``: ``make demo-ui`` shows the image in Airflow's UI.

The demo runs in a fresh folder against the embedded fake (``dag.test()``, as ``make demo``
does), then ``python -m devtools.demo_ui`` serves Airflow's UI over the demo's database.
Chromium opens the address it prints and finds the demo's image decoded in the FLUX images tab.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from devtools.sessions import stop_session
from flux_provider.testing.loopback import free_loopback_ports
from tests.conftest import REPO
from tests.e2e.browser.support import CHROMIUM_ARGS, chromium_path, decoded_images, wait_for

pytestmark = pytest.mark.timeout(600)


def _user_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.pop("FLUX_API_KEY", None)
    env.update({"FLUX_DEMO_DAGS": str(REPO / "example_dags"), "FLUX_DEMO_UI_PORT": str(port)})
    return env


def test_the_demo_image_is_in_the_ui(tmp_path: Path) -> None:
    (port,) = free_loopback_ports(1)
    env = _user_env(tmp_path, port)
    demo = subprocess.run(
        [sys.executable, "-m", "devtools.demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    [hint] = [line for line in demo.stdout.splitlines() if "make demo-ui" in line]
    [stored] = list((tmp_path / "output").glob("*.png"))

    with (tmp_path / "demo-ui.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "devtools.demo_ui"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _serve_and_look(tmp_path, port, hint, stored)
        finally:
            stop_session(server, 30)


def _serve_and_look(tmp_path: Path, port: int, hint: str, stored: Path) -> None:
    base = f"http://127.0.0.1:{port}"
    health = f"{base}/api/v2/monitor/health"

    def serving() -> bool:
        log = (tmp_path / "demo-ui.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        try:
            return httpx.get(health, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(serving, "the demo's UI to serve", timeout=120)
    log = (tmp_path / "demo-ui.log").read_text(errors="replace")
    [opened] = [line.split("open ", 1)[1] for line in log.splitlines() if "demo-ui: open " in line]
    assert opened == hint.rsplit(" ", 1)[-1]
    with sync_playwright() as playwright:
        browser: Browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(opened)
            frame = page.frame_locator("iframe[title='FLUX images']")
            [width] = decoded_images(frame, 1)
            assert width > 0
            source = frame.locator("img").first.get_attribute("src")
            assert source is not None
            served = page.request.get(base + source)
            assert served.body() == stored.read_bytes()
        finally:
            browser.close()
