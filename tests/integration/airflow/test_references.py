"""Reference images from storage: read through Airflow's object storage, sent as ``data:`` URIs,
checked before anything is submitted."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_provider.api.errors import InvalidInputError
from flux_provider.operators import FluxGenerateImageBatchOperator, FluxGenerateImageOperator
from flux_provider.operators.references import resolve_references
from flux_provider.testing import FakeFluxServer, encode_png
from tests.support.airflow import memory_object_store

PNG = encode_png(4, 3, [bytes([200, 30, 30] * 4)] * 3)
GIF = b"GIF89a" + b"\x00" * 20


@pytest.fixture
def memory() -> Iterator[Any]:
    with memory_object_store() as store:
        yield store


def _decoded(uri: str) -> tuple[str, bytes]:
    head, payload = uri.split(",", 1)
    return head, base64.b64decode(payload)


def test_local_paths_file_urls_and_object_storage_paths(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.gif").write_bytes(GIF)
    resolved = resolve_references(
        [
            str(tmp_path / "a.png"),
            (tmp_path / "b.gif").as_uri(),
            ObjectStoragePath((tmp_path / "a.png").as_uri()),
            "https://images.example.com/c.jpg",
            "data:image/png;base64,iVBORw0KGgo=",
        ]
    )
    assert resolved is not None
    assert _decoded(resolved[0]) == ("data:image/png;base64", PNG)
    assert _decoded(resolved[1]) == ("data:image/gif;base64", GIF)
    assert _decoded(resolved[2]) == ("data:image/png;base64", PNG)
    assert resolved[3:] == [
        "https://images.example.com/c.jpg",
        "data:image/png;base64,iVBORw0KGgo=",
    ]


def test_an_object_store_is_read_like_s3(memory: Any) -> None:
    memory.pipe("/photos/sku-1.png", PNG)
    (uri,) = resolve_references(["memory://photos/sku-1.png"]) or []
    assert _decoded(uri) == ("data:image/png;base64", PNG)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("missing.png", None, r"input_urls\[1\]: '.*missing.png' does not exist"),
        (
            "notes.txt",
            b"not an image at all",
            r"input_urls\[1\]: .* is not a PNG, JPEG, WebP or GIF",
        ),
        ("huge.png", PNG * 3, r"input_urls\[1\]: .* is over the \d+ bytes cap for a reference"),
    ],
)
def test_a_bad_reference_is_named_before_anything_is_sent(
    tmp_path: Path, name: str, data: bytes | None, message: str
) -> None:
    (tmp_path / "ok.png").write_bytes(PNG)
    if data is not None:
        (tmp_path / name).write_bytes(data)
    references = [str(tmp_path / "ok.png"), str(tmp_path / name)]
    with pytest.raises(InvalidInputError, match=message):
        resolve_references(references, max_bytes=len(PNG) * 2)


@pytest.mark.usefixtures("airflow_db")
def test_the_operator_sends_stored_references_as_data_uris(
    fake_api: FakeFluxServer, tmp_path: Path, memory: Any
) -> None:
    memory.pipe("/photos/sku-1.png", PNG)
    (tmp_path / "side.png").write_bytes(PNG)
    operator = FluxGenerateImageOperator(
        task_id="edit",
        prompt="the same chair in a white studio",
        input_urls=["memory://photos/sku-1.png", str(tmp_path / "side.png")],
        deferrable=False,
        poll_interval=0.05,
    )
    flux_input = operator.build_input()
    flux_task_id = operator.hook.create_task(flux_input)
    (task,) = fake_api.tasks.values()
    assert task.flux_task_id == flux_task_id
    sent = task.input["img_urls"]
    assert isinstance(sent, list)
    assert [_decoded(uri) for uri in sent] == [("data:image/png;base64", PNG)] * 2
    # What was asked is described by the references' number, never their bytes.
    assert flux_input.summary()["reference_images"] == 2


@pytest.mark.usefixtures("airflow_db")
def test_a_batch_reads_each_items_references_and_names_a_bad_one(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    operator = FluxGenerateImageBatchOperator(
        task_id="batch",
        download_to=str(tmp_path / "out"),
        inputs=[
            {"prompt": "one", "input_urls": [str(tmp_path / "a.png")]},
            {"prompt": "two", "input_urls": [str(tmp_path / "missing.png")]},
        ],
    )
    with pytest.raises(InvalidInputError, match=r"inputs\[1\]\.input_urls\[0\]: .* does not exist"):
        operator.build_inputs()
    operator.inputs = [{"prompt": "one", "input_urls": [str(tmp_path / "a.png")]}]
    (item,) = operator.build_inputs()
    assert item.input_urls is not None
    assert _decoded(item.input_urls[0]) == ("data:image/png;base64", PNG)
    assert fake_api.stats.requests == []


@pytest.mark.parametrize("name", ["a b", "100%", "a#b", "dé"])
def test_a_local_folder_keeps_its_name_whatever_its_characters(tmp_path: Path, name: str) -> None:
    from flux_provider.hooks.storage import storage_path

    folder = storage_path(str(tmp_path / name))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.png").write_bytes(PNG)
    assert (tmp_path / name / "x.png").read_bytes() == PNG


@pytest.mark.usefixtures("airflow_db")
def test_the_example_edits_photos_from_a_folder_and_reuses_the_result(
    fake_api: FakeFluxServer, tmp_path: Path
) -> None:
    from tests.conftest import load_dag

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "front.png").write_bytes(PNG)
    (photos / "notes.txt").write_text("not a photo")
    conf = {"photos": str(photos), "output_dir": str(tmp_path / "out")}
    for _ in range(2):
        run = load_dag("flux_edit_from_storage").test(run_conf=conf)
        assert run.state == "success"
    (task,) = fake_api.tasks.values()  # the second run reused the first one's image
    sent = task.input["img_urls"]
    assert isinstance(sent, list)
    assert [_decoded(uri) for uri in sent] == [("data:image/png;base64", PNG)]
