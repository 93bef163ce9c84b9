"""``reuse=True``: an identical generation whose images are still stored is not paid again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flux_provider.operators.reuse import REUSE_FOLDER
from flux_provider.testing import FakeFluxServer
from tests.conftest import load_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


def _run(out: Path, prompt: str = "a teapot on linen", seed: int = 7) -> dict[str, Any]:
    run = load_dag("flux_test_reuse").test(
        run_conf={"prompt": prompt, "seed": seed, "out": str(out)}
    )
    assert run.state == "success"
    (ti,) = run.get_task_instances()
    value: dict[str, Any] = ti.xcom_pull(task_ids="generate")
    return value


def _image(result: dict[str, Any]) -> Path:
    (stored,) = result["stored"]
    return Path(stored["location"].removeprefix("file://"))


def test_the_same_generation_is_returned_without_calling_the_api(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    first = _run(tmp_path)
    assert "reused" not in first
    (manifest,) = (tmp_path / REUSE_FOLDER).iterdir()
    assert json.loads(manifest.read_text())["result"]["flux_task_id"] == first["flux_task_id"]
    requests = len(fake_api.stats.requests)
    again = _run(tmp_path)
    assert again["reused"] is True
    assert again["flux_task_id"] == first["flux_task_id"]
    assert again["stored"] == first["stored"]
    assert len(fake_api.stats.requests) == requests  # not one call
    assert fake_api.stats.tasks_created == 1


def test_another_seed_is_another_generation(fake_api: FakeFluxServer, tmp_path: Path) -> None:
    first = _run(tmp_path, seed=7)
    other = _run(tmp_path, seed=8)
    assert "reused" not in other
    assert other["flux_task_id"] != first["flux_task_id"]
    assert fake_api.stats.tasks_created == 2


@pytest.mark.parametrize("damage", ["changed", "missing", "elsewhere"])
def test_an_image_that_is_not_whole_and_in_place_is_generated_again(
    fake_api: FakeFluxServer, tmp_path: Path, damage: str
) -> None:
    first = _run(tmp_path)
    image = _image(first)
    if damage == "changed":
        image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    elif damage == "missing":
        image.unlink()
    else:
        (manifest,) = (tmp_path / REUSE_FOLDER).iterdir()
        value = json.loads(manifest.read_text())
        moved = tmp_path.parent / f"{tmp_path.name}-elsewhere.png"
        moved.write_bytes(image.read_bytes())
        value["result"]["stored"][0]["location"] = moved.as_uri()
        manifest.write_text(json.dumps(value))
    again = _run(tmp_path)
    assert "reused" not in again
    assert fake_api.stats.tasks_created == 2
    assert _image(again).read_bytes().startswith(b"\x89PNG")


def test_reuse_needs_a_folder_to_find_the_images_in() -> None:
    from flux_provider.operators import FluxGenerateImageOperator

    with pytest.raises(ValueError, match="reuse=True needs download_to"):
        FluxGenerateImageOperator(task_id="no_folder", prompt="x", reuse=True)
