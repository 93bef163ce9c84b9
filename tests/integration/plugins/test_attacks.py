"""The images route under attack, through Airflow's own API server app and real files.

``dag.test()`` runs ``flux_images_targets`` (tests/dags) against the fake API, so genuine
results and stored images exist. Then a user who is no admin but may edit XComs (the simple
auth manager's ``user`` role) rewrites a task's ``return_value`` through Airflow's REST API
(``PATCH .../xcomEntries/return_value``; on Airflow 3.1, whose ``PATCH`` cannot store a
mapping, ``POST``) to point the plugin at files it must not serve. Each
attempt must end in a 404 (and the page must not link a location that is not the operator's
file), with a warning in the API server's log that names the task instance, never the file.
Every answer of the plugin, errors included, carries ``nosniff`` and a restrictive
Content-Security-Policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fsspec  # type: ignore[import-untyped]
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import attach
from fastapi.testclient import TestClient

from flux_provider.hooks.storage import storage_path
from flux_provider.testing import FakeFluxServer, render_image
from tests.conftest import AIRFLOW_HOME, API_KEY, load_dag
from tests.integration.plugins.auth import EDITOR
from tests.integration.plugins.conftest import bearer

DAG_ID = "flux_images_targets"
STEERED_DAG = "flux_text_to_image"
STEERED_TASK = "generate_hero_image"
SVG = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(document.domain)</script></svg>"
HTML = b"<!doctype html><script>alert(document.domain)</script>"
POLYGLOT = b"\x89PNG\r\n\x1a\n<html><script>alert(document.domain)</script></html>"
SECRET = b"fernet_key = not-for-anyone's-eyes\n"


def _path(*parts: object) -> str:
    return "/".join(quote(str(part), safe="") for part in parts)


def _image_url(run_id: str, task_id: str, dag_id: str = DAG_ID, index: int = 0) -> str:
    return "/flux/images/" + _path(dag_id, run_id, task_id, -1, index)


def _page_url(run_id: str, task_id: str, dag_id: str = DAG_ID) -> str:
    return "/flux/ti/" + _path(dag_id, run_id, task_id, -1)


def _xcom_url(run_id: str, task_id: str, dag_id: str = DAG_ID) -> str:
    return (
        f"/api/v2/dags/{_path(dag_id)}/dagRuns/{_path(run_id)}/taskInstances/"
        f"{_path(task_id)}/xcomEntries/return_value"
    )


def _record(location: str, content: bytes) -> dict[str, Any]:
    return {
        "location": location,
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "content_type": "image/png",
    }


@pytest.fixture(scope="module")
def targets(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished run of ``flux_images_targets``, and one of the text-to-image example whose
    conf steered ``download_to`` into a folder holding a secret and another task's image."""
    output = tmp_path_factory.mktemp("flux-images-targets")
    steered = tmp_path_factory.mktemp("steered")
    (steered / "secret.txt").write_bytes(SECRET)
    foreign = render_image("someone else's image", 3, "1:1")
    (steered / "task_feedface00000000_0.png").write_bytes(foreign)
    attach("memory", fs=fsspec.filesystem("memory"))
    with (
        pytest.MonkeyPatch.context() as patch,
        FakeFluxServer(api_key=API_KEY, duration=0.2) as fake,
    ):
        patch.setenv("AIRFLOW_CONN_FLUX_DEFAULT", fake.airflow_connection_json())
        run = load_dag(DAG_ID).test(run_conf={"output_dir": str(output)})
        steered_run = load_dag(STEERED_DAG).test(run_conf={"output_dir": str(steered)})
    assert run.state == steered_run.state == "success"
    return {
        "run_id": run.run_id,
        "output": output,
        "steered_run_id": steered_run.run_id,
        "steered": steered,
        "foreign": foreign,
    }


def _result(api_server: TestClient, run_id: str, task_id: str, dag_id: str = DAG_ID) -> Any:
    answer = api_server.get(
        _xcom_url(run_id, task_id, dag_id) + "?deserialize=true", headers=bearer(EDITOR)
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["value"]


def _write_return_value(
    api_server: TestClient, user: str, run_id: str, task_id: str, value: Any, dag_id: str
) -> None:
    """``user`` sets the task's return value through the REST API: ``PATCH`` where Airflow
    stores the value as sent (3.2+). Airflow 3.1's ``PATCH`` stores the value's JSON text, a
    string no reader takes for a result; there a user creates the XCom instead (``POST``, on a
    task instance without one, which the row's removal stands for here)."""
    url = _xcom_url(run_id, task_id, dag_id)
    edited = api_server.patch(url, headers=bearer(user), json={"value": value})
    assert edited.status_code == 200, edited.text
    if _result(api_server, run_id, task_id, dag_id) == value:
        return
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(XComModel).filter_by(
            dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=-1, key="return_value"
        ).delete()
    created = api_server.post(
        url.rsplit("/", 1)[0], headers=bearer(user), json={"key": "return_value", "value": value}
    )
    assert created.status_code == 201, created.text
    assert _result(api_server, run_id, task_id, dag_id) == value


@contextlib.contextmanager
def _tampered(
    api_server: TestClient, run_id: str, task_id: str, value: Any, dag_id: str = DAG_ID
) -> Iterator[None]:
    """The task's return value rewritten by the non-admin editor through the REST API, and
    put back afterwards."""
    original = _result(api_server, run_id, task_id, dag_id)
    _write_return_value(api_server, EDITOR, run_id, task_id, value, dag_id)
    try:
        yield
    finally:
        _write_return_value(api_server, "admin", run_id, task_id, original, dag_id)


@contextlib.contextmanager
def _replaced(path: Path, make: Callable[[Path], object]) -> Iterator[None]:
    """``path`` replaced by what ``make`` puts there, and the original put back afterwards."""
    original = path.read_bytes()
    path.unlink()
    make(path)
    try:
        yield
    finally:
        path.unlink()
        path.write_bytes(original)


def _with_stored(result: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    return {**result, "stored": [record]}


def _assert_refused(
    api_server: TestClient,
    caplog: pytest.LogCaptureFixture,
    run_id: str,
    task_id: str,
    secrets: list[str],
    *,
    dag_id: str = DAG_ID,
    linked: bool = False,
) -> None:
    """A 404 for the image with nothing of the target in it, the page linking it only when
    ``linked``, and warnings that name the task instance and none of ``secrets``."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flux_provider.plugins"):
        image = api_server.get(_image_url(run_id, task_id, dag_id), headers=bearer(EDITOR))
        page = api_server.get(_page_url(run_id, task_id, dag_id), headers=bearer(EDITOR))
    assert image.status_code == 404, image.text
    assert image.headers["content-type"] == "application/json"
    for marker in (b"root:", b"fernet", b"<script", b"\x89PNG", b"<svg", SECRET):
        assert marker not in image.content
    assert page.status_code == 200
    sources = re.findall(r"<img src='([^']+)'", page.text)
    assert (sources == [_image_url(run_id, task_id, dag_id)]) is linked, sources
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name.startswith("flux_provider.plugins")
    ]
    # The image request warns; the page warns too when it does not link the image.
    assert len(warnings) == (1 if linked else 2), warnings
    for warning in warnings:
        for named in (f"dag_id={dag_id!r}", f"run_id={run_id!r}", f"task_id={task_id!r}"):
            assert named in warning
        assert "map_index=-1" in warning
        assert "image 0 " in warning
        for secret in [*secrets, "file://", "memory://"]:
            assert secret not in warning, (secret, warning)


def test_the_genuine_images_are_served_with_the_type_their_bytes_name(
    api_server: TestClient, targets: dict[str, Any]
) -> None:
    run_id = targets["run_id"]
    for task_id in ("genuine", "bucket"):
        [stored] = _result(api_server, run_id, task_id)["stored"]
        image = api_server.get(_image_url(run_id, task_id), headers=bearer(EDITOR))
        assert image.status_code == 200, image.text
        assert image.headers["content-type"] == "image/png"
        assert hashlib.sha256(image.content).hexdigest() == stored["sha256"]
        assert len(image.content) == stored["bytes"]
    # A recorded content type is not believed: the bytes name the type.
    result = _result(api_server, run_id, "genuine")
    [stored] = result["stored"]
    with _tampered(
        api_server,
        run_id,
        "genuine",
        _with_stored(result, {**stored, "content_type": "image/svg+xml"}),
    ):
        image = api_server.get(_image_url(run_id, "genuine"), headers=bearer(EDITOR))
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"


def _passwd() -> Path:
    return Path("/etc/passwd")


def _airflow_cfg() -> Path:
    path = AIRFLOW_HOME / "airflow.cfg"
    assert path.is_file()
    return path


def _password_file() -> Path:
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    path = Path(SimpleAuthManager.get_generated_password_file())
    assert path.is_file()
    return path


def _climb(folder: Path, target: Path, encoded: bool = False) -> str:
    up = "%2e%2e" if encoded else ".."
    steps = "/".join([up] * len(folder.parts))
    return f"{storage_path(str(folder))}/{steps}{target}"


OUTSIDE_FILES: dict[str, Callable[[Path], tuple[str, Path]]] = {
    "etc-passwd": lambda folder: (_passwd().as_uri(), _passwd()),
    "airflow-cfg": lambda folder: (_airflow_cfg().as_uri(), _airflow_cfg()),
    "password-file": lambda folder: (_password_file().as_uri(), _password_file()),
    "dot-dot-climb": lambda folder: (_climb(folder, _passwd()), _passwd()),
    "dot-dot-climb-to-airflow-cfg": lambda folder: (
        _climb(folder, _airflow_cfg()),
        _airflow_cfg(),
    ),
    "percent-encoded-climb": lambda folder: (_climb(folder, _passwd(), True), _passwd()),
}


@pytest.mark.parametrize("target", OUTSIDE_FILES.values(), ids=OUTSIDE_FILES.keys())
def test_a_file_outside_the_download_folder_is_not_served(
    api_server: TestClient,
    targets: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    target: Callable[[Path], tuple[str, Path]],
) -> None:
    run_id = targets["run_id"]
    location, path = target(targets["output"])
    result = _result(api_server, run_id, "genuine")
    # The attacker even records the target's true size and SHA-256.
    with _tampered(
        api_server, run_id, "genuine", _with_stored(result, _record(location, path.read_bytes()))
    ):
        _assert_refused(api_server, caplog, run_id, "genuine", [str(path), path.name])


def test_a_climb_out_of_the_folder_and_back_in_is_not_served(
    api_server: TestClient, targets: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_id, folder = targets["run_id"], targets["output"]
    result = _result(api_server, run_id, "genuine")
    [stored] = result["stored"]
    name = stored["location"].rsplit("/", 1)[1]
    location = f"{storage_path(str(folder))}/../{folder.name}/{name}"
    with _tampered(
        api_server, run_id, "genuine", _with_stored(result, {**stored, "location": location})
    ):
        _assert_refused(api_server, caplog, run_id, "genuine", [str(folder)])


def test_an_object_in_another_bucket_is_not_served(
    api_server: TestClient, targets: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = targets["run_id"]
    result = _result(api_server, run_id, "bucket")
    [stored] = result["stored"]
    other = ObjectStoragePath(stored["location"].replace("flux-bucket-a", "flux-bucket-b"))
    other.parent.mkdir(parents=True, exist_ok=True)
    content = render_image("a private object", 5, "1:1")
    with other.open("wb") as sink:  # type: ignore[no-untyped-call]
        sink.write(content)
    with _tampered(
        api_server, run_id, "bucket", _with_stored(result, _record(str(other), content))
    ):
        _assert_refused(api_server, caplog, run_id, "bucket", ["flux-bucket-b"])


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"sha256": hashlib.sha256(b"something else").hexdigest()}, id="wrong-sha256"),
        pytest.param({"bytes": 1}, id="wrong-size"),
        pytest.param({"bytes": 10**12}, id="huge-size"),
        pytest.param({"sha256": None}, id="no-sha256"),
    ],
)
def test_the_right_file_with_a_wrong_record_is_not_served(
    api_server: TestClient,
    targets: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    change: dict[str, Any],
) -> None:
    run_id = targets["run_id"]
    result = _result(api_server, run_id, "genuine")
    [stored] = result["stored"]
    with _tampered(api_server, run_id, "genuine", _with_stored(result, {**stored, **change})):
        _assert_refused(api_server, caplog, run_id, "genuine", [], linked=True)


def test_a_sibling_image_of_another_task_in_the_same_folder_is_not_served(
    api_server: TestClient, targets: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = targets["run_id"]
    result = _result(api_server, run_id, "genuine")
    [neighbour] = _result(api_server, run_id, "neighbour")["stored"]
    assert (
        neighbour["location"].rsplit("/", 1)[0] == result["stored"][0]["location"].rsplit("/", 1)[0]
    )
    with _tampered(api_server, run_id, "genuine", _with_stored(result, neighbour)):
        _assert_refused(api_server, caplog, run_id, "genuine", [neighbour["location"]])


def test_a_symlink_planted_in_the_folder_is_not_followed(
    api_server: TestClient, targets: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = targets["run_id"]
    result = _result(api_server, run_id, "symlinked")
    [stored] = result["stored"]
    path = Path(ObjectStoragePath(stored["location"]).path)
    secret = _airflow_cfg()
    record = {**_record(stored["location"], secret.read_bytes())}
    with (
        _replaced(path, lambda link: link.symlink_to(secret)),
        _tampered(api_server, run_id, "symlinked", _with_stored(result, record)),
    ):
        _assert_refused(api_server, caplog, run_id, "symlinked", [str(secret)], linked=True)


@pytest.mark.parametrize(
    ("extension", "content"),
    [
        pytest.param(".svg", SVG, id="svg-as-svg"),
        pytest.param(".html", HTML, id="html-as-html"),
        pytest.param(".png", SVG, id="svg-as-png"),
        pytest.param(".png", HTML, id="html-as-png"),
        pytest.param(".png", POLYGLOT, id="png-signature-then-html"),
    ],
)
def test_active_content_stored_with_the_right_hash_is_not_served(
    api_server: TestClient,
    targets: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    extension: str,
    content: bytes,
) -> None:
    run_id = targets["run_id"]
    result = _result(api_server, run_id, "planted")
    [stored] = result["stored"]
    path = Path(ObjectStoragePath(stored["location"]).path)
    planted = path.with_suffix(extension)
    location = stored["location"].rsplit(".", 1)[0] + extension
    record = {**_record(location, content), "content_type": "image/svg+xml"}
    with contextlib.ExitStack() as stack:
        if planted == path:
            stack.enter_context(_replaced(path, lambda target: target.write_bytes(content)))
        else:
            planted.write_bytes(content)
            stack.callback(planted.unlink)
        stack.enter_context(_tampered(api_server, run_id, "planted", _with_stored(result, record)))
        _assert_refused(api_server, caplog, run_id, "planted", [], linked=planted == path)


def test_a_run_whose_conf_steered_download_to_serves_only_its_own_image(
    api_server: TestClient, targets: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_id, steered = targets["steered_run_id"], targets["steered"]
    image_url = _image_url(run_id, STEERED_TASK, STEERED_DAG)
    result = _result(api_server, run_id, STEERED_TASK, STEERED_DAG)
    [stored] = result["stored"]
    assert stored["location"].startswith(steered.as_uri())
    assert api_server.get(image_url, headers=bearer(EDITOR)).status_code == 200
    secret = steered / "secret.txt"
    foreign = steered / "task_feedface00000000_0.png"
    attempts = [
        # A file that is no FLUX image, with its true hash: not the operator's name.
        (_record(secret.as_uri(), SECRET), [str(secret)], False),
        # Another task's image in the steered folder: the attacker cannot know its hash.
        (_record(foreign.as_uri(), b"a guess"), [str(foreign)], False),
        # Even named as this task's image would be, a guessed hash is refused.
        ({**stored, "sha256": hashlib.sha256(b"a guess").hexdigest()}, [], True),
    ]
    for record, secrets, linked in attempts:
        with _tampered(api_server, run_id, STEERED_TASK, _with_stored(result, record), STEERED_DAG):
            _assert_refused(
                api_server, caplog, run_id, STEERED_TASK, secrets, dag_id=STEERED_DAG, linked=linked
            )


SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


ROUTES: dict[str, tuple[Callable[[str], str], str | None, int]] = {
    "task-page": (lambda run_id: _page_url(run_id, "genuine"), EDITOR, 200),
    "gallery": (lambda run_id: "/flux/run/" + _path(DAG_ID, run_id), EDITOR, 200),
    "image": (lambda run_id: _image_url(run_id, "genuine"), EDITOR, 200),
    "no-credential": (lambda run_id: _image_url(run_id, "genuine"), None, 401),
    "no-access": (lambda run_id: _page_url(run_id, "genuine", STEERED_DAG), "outsider", 403),
    "no-such-image": (lambda run_id: _image_url(run_id, "genuine", index=7), EDITOR, 404),
    "no-such-route": (lambda run_id: "/flux/nothing-here", EDITOR, 404),
    "bad-map-index": (
        lambda run_id: "/flux/ti/" + _path(DAG_ID, run_id, "genuine", "x"),
        EDITOR,
        422,
    ),
}
"""Each kind of answer: its path for a run, who asks, and the status."""


@pytest.mark.parametrize("route", ROUTES)
def test_every_answer_carries_the_security_headers(
    api_server: TestClient, targets: dict[str, Any], route: str
) -> None:
    path, user, status = ROUTES[route]
    answer = api_server.get(path(targets["run_id"]), headers=bearer(user) if user else {})
    assert answer.status_code == status, answer.text
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value
    policy = answer.headers["content-security-policy"]
    if route in ("task-page", "gallery"):
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["default-src"] == "'none'"
        # The API server's own origin, also by name: sandboxed iframes may not match 'self'.
        assert directives["img-src"] == "'self' http://testserver"
        assert directives["frame-ancestors"] == "'self'"
        assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]+=*'", directives["style-src"])
        assert "script-src" not in directives
    else:
        assert policy == "default-src 'none'; frame-ancestors 'self'; sandbox"


def test_a_page_allows_only_the_result_url_origins_it_shows(
    api_server: TestClient, targets: dict[str, Any]
) -> None:
    run_id = targets["run_id"]
    result = _result(api_server, run_id, "neighbour")
    urls = ["https://cdn.example:8443/a.png?sig=1", "javascript:alert(1)", "https://x'y/z.png"]
    edited = {key: value for key, value in result.items() if key != "stored"}
    with _tampered(api_server, run_id, "neighbour", {**edited, "result_urls": urls}):
        page = api_server.get(_page_url(run_id, "neighbour"), headers=bearer(EDITOR))
    assert page.status_code == 200
    assert re.findall(r"<img src='([^']+)'", page.text) == [urls[0]]
    policy = page.headers["content-security-policy"]
    assert "img-src 'self' http://testserver https://cdn.example:8443;" in policy
