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
from flux_provider.plugins.results import CODE_FACTS, FluxResult, Image, TaskFacts, TaskKey

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
.image { display: flex; gap: 20px; flex-wrap: wrap; align-items: flex-start;
         margin-bottom: 24px; }
.image img { display: block; flex: none; width: auto; height: auto;
             max-width: min(640px, 100%); max-height: 640px; object-fit: contain;
             border: 1px solid var(--line); }
table { border-collapse: collapse; }
th { text-align: left; color: var(--muted); font-weight: normal; padding: 2px 12px 2px 0;
     vertical-align: top; white-space: nowrap; }
td { padding: 2px 0; overflow-wrap: anywhere; max-width: 560px; }
code { font-size: 12px; }
.grid { display: grid; gap: 12px; align-items: start;
        grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); }
.card { margin: 0; min-width: 0; background: var(--card); border: 1px solid var(--line);
        border-radius: 6px; padding: 8px; }
.card img { display: block; width: auto; height: auto; max-width: 100%; max-height: 360px;
            margin: 0 auto; }
.card figcaption { min-width: 0; }
.card .label { font-weight: 600; margin-top: 6px; overflow-wrap: anywhere; }
.card .meta { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
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


def image_label(image: Image) -> str:
    """What an image is within its task's result: ``Image 0``, ``Item 7``, ``Item 7 · image 1``."""
    several = len(image.generation.result_urls) > 1
    if image.item is None:
        return f"Image {image.index}"
    return f"Item {image.item}" + (f" · image {image.position}" if several else "")


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


_ENDED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


def no_result_note(facts: TaskFacts | None) -> str:
    """Why a task instance shows no FLUX image, in plain words."""
    facts = facts or TaskFacts(None, None)
    if not facts.makes_flux_images:
        return f"This task ({facts.operator}) makes no FLUX images."
    if facts.state in _ENDED:
        return f"This task instance ended ({facts.state}) without a FLUX result."
    state = facts.state or "not started"
    return f"No FLUX images yet: this task instance is {state.replace('_', ' ')}."


def task_page(
    key: TaskKey, result: FluxResult | None, facts: TaskFacts | None, address: ImageAddress
) -> str:
    """The task-instance tab: each image with what made it."""
    title = f"FLUX images · {task_label(key)}"
    if result is None:
        body = f"<h1>{escape(title)}</h1><p class='note'>{escape(no_result_note(facts))}</p>"
        return _page(title, body)
    parts = [f"<h1>{escape(title)}</h1>"]
    images = result.images
    if not images:
        parts.append("<p class='note'>The result lists no image.</p>")
    for image in images:
        label = image_label(image)
        parts.append(
            "<section class='image'>"
            f"{_image_tag(address(result, image), label)}"
            f"<div><h2>{escape(label)}</h2>{_details(result, image)}</div></section>"
        )
    return _page(title, "".join(parts))


def gallery_page(
    dag_id: str, run_id: str, results: Iterable[FluxResult], address: ImageAddress
) -> str:
    """The DAG-run gallery: every FLUX image of the run in a grid, labelled by task, map index
    and (in a batch) item."""
    title = f"FLUX gallery · {dag_id} · {run_id}"
    cards = []
    for result in results:
        images = result.images
        for image in images:
            label = task_label(result.key)
            if image.item is not None or len(images) > 1:
                label += f" · {image_label(image).lower()}"
            seed = (image.generation.request or {}).get("seed")
            meta = escape(image.generation.flux_task_id)
            if seed is not None:
                meta += f" · seed\u00a0{escape(str(seed))}"
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
