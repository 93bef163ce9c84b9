"""The human-review form's markdown: nothing from a result or the DAG adds markup of its own."""

from __future__ import annotations

import re
from typing import Any

import pytest
from markdown_it import MarkdownIt

from flux_provider.plugins.review import code_span, markdown_url, review_body

EVIL = "https://evil.example"
INJECTIONS = [
    f") [APPROVE]({EVIL}) ![x](",
    f"> [APPROVE]({EVIL}) <",
    f'" [APPROVE]({EVIL}) "',
    f"\\) [APPROVE]({EVIL})",
    f"\n\n[APPROVE]({EVIL})\n\n",
    f"<a href='{EVIL}'>APPROVE</a>",
    f"| [APPROVE]({EVIL}) |",
    f"\\| [APPROVE]({EVIL}) |",
    f"` [APPROVE]({EVIL}) `",
    f"&#41; [APPROVE]({EVIL})",
    f"{EVIL} www.evil.example approve@evil.example",
]


def _render(markdown: str) -> str:
    """HTML as a GitHub-flavoured renderer (tables, autolinked URLs) makes it."""
    html: str = MarkdownIt("gfm-like").render(markdown)
    return html


def _cells(row: str) -> list[str]:
    """A table row split as GitHub-flavoured markdown (micromark) splits it: a backslash
    escapes the next ``\\`` or ``|``, every other ``|`` ends a cell."""
    cells, current, escaped = [], "", False
    for char in row:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            current, escaped = current + char, True
        elif char == "|":
            cells.append(current)
            current = ""
        else:
            current += char
    return [*cells, current]


def _result(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "flux_task_id": "task_0123456789abcdef",
        "state": "success",
        "result_urls": ["https://cdn.example/a.png?sig=1&exp=2"],
        "input": {"prompt": "a teapot", "seed": 7, "aspect_ratio": "1:1"},
        "credits": 6,
    }
    return {**result, **changes}


@pytest.mark.parametrize("injection", INJECTIONS)
def test_a_malicious_result_url_adds_no_link_or_image(injection: str) -> None:
    body = review_body(
        _result(result_urls=[f"https://cdn.example/a.png{injection}"]), "dag", "run", "generate"
    )
    html = _render(body)
    assert html.count("<img") == 1
    assert "<a " not in html
    assert "evil.example" not in re.findall(r"<img src=\"([^\"]*)\"", html)[0].split("/")[2]
    [destination] = re.findall(r"!\[Image 0\]\(([^)\s]*)\)", body)
    assert destination.startswith("https://cdn.example/a.png")


@pytest.mark.parametrize("injection", INJECTIONS)
def test_a_flux_task_id_that_is_not_one_makes_no_result(injection: str) -> None:
    """Task ids are read through the result's type: letters, digits and ``_ . : -`` only."""
    body = review_body(_result(flux_task_id=injection), "dag", "run", "generate")
    html = _render(body)
    assert "nothing to review" in html
    assert "<a " not in html
    assert "<img" not in html


@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize("field", ["prompt", "seed", "aspect_ratio"])
def test_values_from_the_result_are_shown_as_text_only(injection: str, field: str) -> None:
    result = _result()
    result["input"] = {**result["input"], field: injection}
    body = review_body(result, "dag", "run", "generate")
    html = _render(body)
    assert html.count("<img") == 1
    assert "<a " not in html
    for row in body.splitlines():
        if row.startswith("| "):
            assert len(_cells(row)) == 4, row  # "", label, value, ""


@pytest.mark.parametrize("injection", INJECTIONS)
def test_ids_from_the_dag_stay_inside_the_image_path(injection: str) -> None:
    body = review_body(
        _result(result_urls=[], stored=[{"location": "file:///x.png"}]),
        f"dag{injection}",
        f"run{injection}",
        f"task{injection}",
    )
    html = _render(body)
    assert html.count("<img") == 1
    assert "<a " not in html
    [destination] = re.findall(r"!\[Image 0\]\(([^)\s]*)\)", body)
    assert destination.startswith("flux/images/dag")
    no_result = _render(review_body(None, "dag", "run", f"task{injection}"))
    assert "<a " not in no_result
    assert "<img" not in no_result


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:image/png;base64,AAAA", "//evil.example/a.png", "a.png"]
)
def test_only_http_urls_become_images(url: str) -> None:
    assert markdown_url(url) is None
    assert "<img" not in _render(review_body(_result(result_urls=[url]), "d", "r", "t"))


def test_a_plain_result_url_keeps_its_meaning() -> None:
    url = "https://cdn.example/out/a b(1).png?sig=x%2By&exp=2"
    destination = markdown_url(url)
    assert destination == "https://cdn.example/out/a%20b%281%29.png?sig=x%2By&amp;exp=2"
    html = _render(f"![i]({destination})")
    assert 'src="https://cdn.example/out/a%20b%281%29.png?sig=x%2By&amp;exp=2"' in html


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain", "plain"),
        ("a `tick`", "a `tick`"),
        ("``", "``"),
        ("a|b", "a|b"),
        ("a\\|b", "a\\\u200b|b"),
        ("line\nbreak\u2028here\x00", "line break here"),
    ],
)
def test_a_code_span_shows_its_text(text: str, shown: str) -> None:
    html = _render(f"| | |\n|---|---|\n| x | {code_span(text)} |")
    assert f"<code>{shown}</code>" in html
    assert len(_cells(f"| x | {code_span(text)} |")) == 4


def test_the_form_keeps_its_table_of_what_made_the_image() -> None:
    body = review_body(_result(), "dag", "run", "generate")
    assert body.startswith("![Image 0](https://cdn.example/a.png?sig=1&amp;exp=2)\n\n| | |")
    assert "| Flux task | `task_0123456789abcdef` |" in body
    assert "| Prompt | `a teapot` |" in body
