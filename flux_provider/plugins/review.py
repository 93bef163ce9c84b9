"""Markdown that shows a FLUX result to a person, for a human-review form's body.

Airflow's human-in-the-loop operators render their ``body`` as markdown in the UI (GitHub
flavoured, raw HTML skipped). The images come from the plugin's image route, by a path
relative to the API server's base URL, so the reviewer's own session (and access to the DAG)
is what lets them see it.

Nothing that comes from the API or the DAG may add markdown of its own to the form: a URL is
used only as an image destination, made safe by :func:`markdown_url`; every other value (ids,
prompt, seed…) is shown as an inline code span by :func:`code_span`. Backslash escapes would
not do for text: GitHub-flavoured markdown turns ``https://…``, ``www.…`` and e-mail addresses
in text into links even when escaped, while a code span is always literal.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from flux_provider.plugins.pages import image_label
from flux_provider.plugins.paths import image_path
from flux_provider.plugins.results import FluxResult, TaskKey, is_flux_result

_URL_SAFE = "-._~:/?#@!$&*+,;=%"
"""What :func:`markdown_url` keeps as it is; everything else (``( ) [ ] < > " ' \\``, spaces,
backticks, braces, non-ASCII…) is percent-encoded."""

_BACKTICKS = re.compile(r"`+")


def markdown_url(url: str) -> str | None:
    """``url`` as a markdown link or image destination that cannot end early or add markup;
    ``None`` unless it is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        cleaned = parts.geturl()
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    # "&amp;" is markdown's own escape for "&": the destination decodes back to the URL.
    return quote(cleaned, safe=_URL_SAFE).replace("&", "&amp;")


def code_span(text: str) -> str:
    """``text`` on one line as an inline code span that stays inside its table cell.

    The fence is longer than any run of backticks in ``text``. A ``|`` would end the cell even
    inside a code span, so it is written ``\\|`` (which a table's code span shows as ``|``);
    a backslash right before it would pair with that escape, so a zero-width space keeps them
    apart.
    """
    flat = " ".join(_printable(text).split())
    if not flat:
        return "—"
    flat = flat.replace("\\|", "\\\u200b|").replace("|", "\\|")
    longest = max((len(run) for run in _BACKTICKS.findall(flat)), default=0)
    fence = "`" * (longest + 1)
    padding = " " if longest else ""
    return f"{fence}{padding}{flat}{padding}{fence}"


def _printable(text: str) -> str:
    return "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in text
    )


def review_body(
    result: Mapping[str, Any] | None, dag_id: str, run_id: str, task_id: str, map_index: int = -1
) -> str:
    """Markdown showing each image of ``result`` (the return value of ``task_id`` in this run)
    above a table of what made it.

    Meant for a template, e.g. ``{{ flux_review_body(ti.xcom_pull(task_ids="generate"),
    dag.dag_id, run_id, "generate") }}`` with ``flux_review_body`` in ``user_defined_macros``.
    """
    if not is_flux_result(result):
        return f"No FLUX result from task {code_span(task_id)}: nothing to review."
    assert result is not None
    flux = FluxResult(TaskKey(dag_id, run_id, task_id, map_index), result)
    parts = []
    for image in flux.images:
        if image.location is not None:
            source: str | None = image_path(flux.key, image.index, root="")
        else:
            source = markdown_url(image.result_url) if image.result_url else None
        if source is None:
            continue
        parts.append(f"![{image_label(image)}]({source})")
        rows = [
            f"| {label} | {code_span(text)} |"
            for label, text in flux.facts(image)
            if text is not None and label not in ("Stored at", "Result URL")
        ]
        parts.append("\n".join(["| | |", "|---|---|", *rows]))
    return "\n\n".join(parts) if parts else "The result lists no image."
