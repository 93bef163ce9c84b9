"""A real browser for the UI tests: Debian's Chromium driven by Playwright (no browser download).

Chromium starts headless with the flags this machine's closed network needs (no background
networking, no component updates) and a fresh profile per test module.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from playwright.sync_api import FrameLocator

CHROMIUM = os.environ.get("FLUX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "images"
"""Where the README's screenshots are written (and committed from)."""


def chromium_path() -> str:
    """Debian's Chromium; ``make test-ui`` installs it."""
    found = shutil.which(CHROMIUM) or CHROMIUM
    assert Path(found).exists(), f"no Chromium at {CHROMIUM}: run `make test-ui`, which installs it"
    return found


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 240) -> Any:
    """Call ``probe`` every quarter second until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"{what} not reached"
        time.sleep(0.25)
    return value


def decoded_images(frame: FrameLocator, count: int) -> list[int]:
    """The ``naturalWidth`` of the frame's images, once ``count`` of them have loaded."""
    images = frame.locator("img")
    images.nth(count - 1).wait_for(state="visible", timeout=60_000)
    assert images.count() == count
    widths: list[int] = []
    for index in range(count):
        image = images.nth(index)
        image.scroll_into_view_if_needed()
        widths.append(
            wait_for(
                partial(image.evaluate, "i => i.complete && i.naturalWidth"),
                f"image {index} decoded",
                timeout=60,
            )
        )
    return widths
