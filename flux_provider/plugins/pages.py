"""The plugin's two pages as HTML: one task instance's images, and a DAG run's gallery.

They are shown inside the Airflow UI in sandboxed iframes that run no script, so they are
plain server-rendered HTML with their own small stylesheet (light and dark, as the UI is).
Every value from a result is escaped; image addresses come from the caller. Each page is sent
with :func:`page_policy`: no script at all, the stylesheet allowed by its hash, images only
from the API server itself and the result URLs' origins the page shows.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from html import escape

from flux_provider.api.formatting import count_text
from flux_provider.plugins.results import CODE_FACTS, FluxResult, Image, TaskKey

ImageAddress = Callable[[FluxResult, Image], str | None]
"""Where the page loads an image from (``None``: the image cannot be shown)."""

_STYLE = """
:root { color-scheme: light dark; --line: #d0d7de; --muted: #57606a; --card: #f6f8fa; }
@media (prefers-color-scheme: dark) {
  :root { --line: #30363d; --muted: #8b949e; --card: #161b22; }
}
body { font: 14px/1.45 system-ui, sans-serif; margin: 16px; }
h1 { font-size: 18px; margin: 0 0 12px; }
h2 { font-size: 15px; margin: 0 0 8px; }
.note { color: var(--muted); }
.image { display: flex; gap: 20px; flex-wrap: wrap; margin-bottom: 24px; }
.image img { max-width: min(640px, 100%); max-height: 640px; border: 1px solid var(--line); }
table { border-collapse: collapse; }
th { text-align: left; color: var(--muted); font-weight: normal; padding: 2px 12px 2px 0;
     vertical-align: top; white-space: nowrap; }
td { padding: 2px 0; word-break: break-word; max-width: 560px; }
code { font-size: 12px; }
.grid { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
        padding: 8px; }
.card img { width: 100%; aspect-ratio: 1; object-fit: contain; display: block; }
.card .label { font-weight: 600; margin-top: 6px; }
.card .meta { color: var(--muted); font-size: 12px; word-break: break-all; }
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()


def page_policy(image_origins: Iterable[str] = ()) -> str:
    """The Content-Security-Policy of a page whose images come from the API server itself
    (``'self'``) and ``image_origins`` (``https://host[:port]``, see
    :func:`~flux_provider.plugins.paths.web_origin`)."""
    images = " ".join(["'self'", *sorted(set(image_origins))])
    return (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src {images}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    )


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def task_label(key: TaskKey) -> str:
    """``generate`` or ``generate [3]`` for a mapped task instance."""
    return key.task_id if key.map_index < 0 else f"{key.task_id} [{key.map_index}]"


def _image_tag(address: str | None, alt: str) -> str:
    if address is None:
        return (
            "<p class='note'>No image to show: no stored copy that checks out "
            "and no http(s) result URL.</p>"
        )
    return f"<img src='{escape(address)}' alt='{escape(alt)}' loading='lazy'>"


def _details(result: FluxResult, image: Image) -> str:
    rows = []
    for label, text in result.facts(image):
        shown = "—" if text is None else escape(text)
        if label in CODE_FACTS and text is not None:
            shown = f"<code>{shown}</code>"
        rows.append(f"<tr><th>{escape(label)}</th><td>{shown}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def task_page(
    key: TaskKey, result: FluxResult | None, state: str | None, address: ImageAddress
) -> str:
    """The task-instance tab: each image with what made it."""
    title = f"FLUX images · {task_label(key)}"
    if result is None:
        shown = state or "not run"
        body = (
            f"<h1>{escape(title)}</h1><p class='note'>No FLUX images yet: this task instance "
            f"has not returned a FLUX result (state: {escape(shown)}).</p>"
        )
        return _page(title, body)
    parts = [f"<h1>{escape(title)}</h1>"]
    images = result.images
    if not images:
        parts.append("<p class='note'>The result lists no image.</p>")
    for image in images:
        parts.append(
            "<section class='image'>"
            f"{_image_tag(address(result, image), f'image {image.index}')}"
            f"<div><h2>Image {image.index}</h2>{_details(result, image)}</div></section>"
        )
    return _page(title, "".join(parts))


def gallery_page(
    dag_id: str, run_id: str, results: Iterable[FluxResult], address: ImageAddress
) -> str:
    """The DAG-run gallery: every FLUX image of the run in a grid, labelled by task and map
    index."""
    title = f"FLUX gallery · {dag_id} · {run_id}"
    cards = []
    for result in results:
        for image in result.images:
            label = task_label(result.key)
            if len(result.images) > 1:
                label += f" · image {image.index}"
            seed = result.request.get("seed")
            meta = escape(str(result.value.get("flux_task_id")))
            if seed is not None:
                meta += f" · seed {escape(str(seed))}"
            cards.append(
                f"<figure class='card'>{_image_tag(address(result, image), label)}"
                f"<figcaption><div class='label'>{escape(label)}</div>"
                f"<div class='meta'>{meta}</div></figcaption></figure>"
            )
    if not cards:
        body = f"<h1>{escape(title)}</h1><p class='note'>No FLUX images in this run yet.</p>"
        return _page(title, body)
    count = f"<p class='note'>{count_text(len(cards), 'image')}</p>"
    return _page(title, f"<h1>{escape(title)}</h1>{count}<div class='grid'>{''.join(cards)}</div>")
