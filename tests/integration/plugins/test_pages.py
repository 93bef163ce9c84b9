"""The plugin's HTML, rendered from results without Airflow: escaped, complete, readable."""

from __future__ import annotations

from typing import Any

from flux_provider.plugins.pages import gallery_page, task_page
from flux_provider.plugins.results import FluxResult, Image, TaskFacts, TaskKey, is_flux_result

KEY = TaskKey("dag", "run", "generate", 3)


def _result(**value: Any) -> FluxResult:
    base: dict[str, Any] = {"flux_task_id": "task_1", "state": "success", "result_urls": []}
    return FluxResult(KEY, {**base, **value})


def _stored(location: str, size: int) -> dict[str, Any]:
    return {
        "location": location,
        "bytes": size,
        "sha256": "ab" * 32,
        "content_type": "image/png",
        "source_url": "https://cdn.example/a.png",
    }


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
        stored=[_stored("file:///x.png", 18_089)],
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
                "state": "success",
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
        assert f"task_{index} · seed\u00a0{index}" in html
    assert "No FLUX images" in gallery_page("dag", "run", [], _address)


def test_a_batch_shows_each_items_images_by_index() -> None:
    items = [
        {
            "index": index,
            "flux_task_id": f"task_{index}",
            "state": "success",
            "result_urls": [f"https://cdn.example/{index}.png"],
            "input": {"prompt": f"item {index}", "seed": index},
        }
        for index in (0, 2)
    ]
    failed = {"index": 1, "flux_task_id": None, "state": "failed", "error": "moderated"}
    result = FluxResult(
        TaskKey("dag", "run", "catalogue"),
        {"items": [items[0], failed, items[1]], "succeeded": 2, "failed": 1, "credits": 12},
    )
    assert [(image.index, image.item) for image in result.images] == [(0, 0), (1, 2)]
    page = task_page(result.key, result, None, _address)
    assert "<h2>Item 0</h2>" in page
    assert "<h2>Item 2</h2>" in page
    assert "<tr><th>Batch item</th><td>2</td></tr>" in page
    gallery = gallery_page("dag", "run", [result], _address)
    assert "<div class='label'>catalogue · item 2</div>" in gallery
    assert "2 images" in gallery


def test_a_task_without_a_result_says_why_plainly() -> None:
    approval = task_page(KEY, None, TaskFacts("success", "ApprovalOperator"), _address)
    assert "This task (ApprovalOperator) makes no FLUX images." in approval
    ended = task_page(KEY, None, TaskFacts("failed", "FluxGenerateImageOperator"), _address)
    assert "ended (failed) without a FLUX result" in ended
    running = task_page(KEY, None, TaskFacts("deferred", "@task.flux_image"), _address)
    assert "No FLUX images yet: this task instance is deferred." in running


def test_only_a_flux_result_shape_counts() -> None:
    assert is_flux_result({"flux_task_id": "t", "state": "success", "result_urls": []})
    assert is_flux_result({"items": [], "succeeded": 0, "failed": 0, "credits": 0})
    assert not is_flux_result({"flux_task_id": "t", "state": "submitted"})
    assert not is_flux_result({"stored": [{"location": "file:///etc/passwd"}]})
    assert not is_flux_result(["file:///etc/passwd"])
