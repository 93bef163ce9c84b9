"""Markdown that shows a FLUX result to a person, for a human-review form's body.

Airflow's human-in-the-loop operators render their ``body`` as markdown in the UI. The images
come from the plugin's image route, by a path relative to the API server's base URL, so the
reviewer's own session (and access to the DAG) is what lets them see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flux_provider.plugins.paths import image_path
from flux_provider.plugins.results import CODE_FACTS, FluxResult, TaskKey, is_flux_result

_MARKDOWN_SPECIALS = "\\`*_{}[]<>()#+-.!|"


def _escaped(text: str) -> str:
    """``text`` as literal markdown on one line."""
    flat = " ".join(text.split())
    return "".join(f"\\{char}" if char in _MARKDOWN_SPECIALS else char for char in flat)


def _cell(label: str, text: str) -> str:
    """A table cell: identifiers as code (no escaping needed there), the rest escaped."""
    if label in CODE_FACTS and "`" not in text:
        return f"`{text}`"
    return _escaped(text)


def review_body(
    result: Mapping[str, Any] | None, dag_id: str, run_id: str, task_id: str, map_index: int = -1
) -> str:
    """Markdown showing each image of ``result`` (the return value of ``task_id`` in this run)
    above a table of what made it.

    Meant for a template, e.g. ``{{ flux_review_body(ti.xcom_pull(task_ids="generate"),
    dag.dag_id, run_id, "generate") }}`` with ``flux_review_body`` in ``user_defined_macros``.
    """
    if not is_flux_result(result):
        return f"No FLUX result from task `{_escaped(task_id)}`: nothing to review."
    assert result is not None
    flux = FluxResult(TaskKey(dag_id, run_id, task_id, map_index), result)
    parts = []
    for image in flux.images:
        if image.location is not None:
            source = image_path(flux.key, image.index, root="")
        elif image.result_url and image.result_url.startswith(("https://", "http://")):
            source = image.result_url
        else:
            continue
        parts.append(f"![Image {image.index}]({source})")
        rows = [
            f"| {label} | {_cell(label, text)} |"
            for label, text in flux.facts(image)
            if text is not None and label not in ("Stored at", "Result URL")
        ]
        parts.append("\n".join(["| | |", "|---|---|", *rows]))
    return "\n\n".join(parts) if parts else "The result lists no image."
