"""The plugin's HTML, rendered from results without Airflow: escaped, complete, readable."""

from __future__ import annotations

from typing import Any

from flux_provider.plugins.pages import gallery_page, task_page
from flux_provider.plugins.results import FluxResult, Image, TaskKey, is_flux_result

KEY = TaskKey("dag", "run", "generate", 3)


def _result(**value: Any) -> FluxResult:
    base: dict[str, Any] = {"flux_task_id": "task_1", "state": "success", "result_urls": []}
    return FluxResult(KEY, {**base, **value})


def _address(result: FluxResult, image: Image) -> str | None:
    return f"img/{image.index}"


def test_values_from_the_result_are_escaped() -> None:
    result = _result(
        result_urls=["https://cdn.example/a.png"],
        input={"prompt": "<script>alert('x')</script> & more", "seed": "<b>7</b>"},
    )
    html = task_page(KEY, result, None, _address)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    assert "&lt;b&gt;7&lt;/b&gt;" in html


def test_numbers_are_written_for_people() -> None:
    result = _result(
        result_urls=["https://cdn.example/a.png"],
        credits=1_000_000,
        duration_s=125.0,
        stored=[{"location": "file:///x.png", "bytes": 18_089, "sha256": "ab"}],
    )
    html = task_page(KEY, result, None, _address)
    assert "<td>1,000,000</td>" in html
    assert "<td>2 min 5 s</td>" in html
    assert "<td>17.7 KiB</td>" in html


def test_unknown_values_show_a_dash_and_every_image_is_listed() -> None:
    result = _result(result_urls=["https://cdn.example/a.png", "https://cdn.example/b.png"])
    html = task_page(KEY, result, None, _address)
    assert html.count("<img src=") == 2
    assert "<h1>FLUX images · generate [3]</h1>" in html
    assert "<tr><th>Seed</th><td>—</td></tr>" in html


def test_an_image_without_an_address_is_said_to_be_missing() -> None:
    result = _result(result_urls=["https://cdn.example/a.png"])
    html = task_page(KEY, result, None, lambda result, image: None)
    assert "<img" not in html
    assert "No image to show" in html


def test_the_gallery_labels_cards_by_task_and_map_index() -> None:
    results = [
        FluxResult(
            TaskKey("dag", "run", "generate", index),
            {
                "flux_task_id": f"task_{index}",
                "result_urls": ["https://cdn.example/a.png"],
                "input": {"seed": index},
            },
        )
        for index in range(3)
    ]
    html = gallery_page("dag", "run", results, _address)
    assert html.count("class='card'") == 3
    assert "3 images" in html
    for index in range(3):
        assert f"<div class='label'>generate [{index}]</div>" in html
        assert f"task_{index} · seed {index}" in html
    assert "No FLUX images" in gallery_page("dag", "run", [], _address)


def test_only_a_flux_result_shape_counts() -> None:
    assert is_flux_result({"flux_task_id": "t", "result_urls": []})
    assert not is_flux_result({"flux_task_id": "t", "state": "submitted"})
    assert not is_flux_result({"stored": [{"location": "file:///etc/passwd"}]})
    assert not is_flux_result(["file:///etc/passwd"])
