"""The plugin's FastAPI app, mounted by the API server under ``/flux``.

Routes (each authorised by :mod:`~flux_provider.plugins.access`):

* ``GET /ti/{dag_id}/{run_id}/{task_id}/{map_index}``: the task instance's images (HTML);
* ``GET /run/{dag_id}/{run_id}``: the run's gallery (HTML);
* ``GET /images/{dag_id}/{run_id}/{task_id}/{map_index}/{index}``: one stored image (the
  pages and the human-review form's body show it from here).

An image is streamed from the storage its task recorded, with the content type recorded
there; the request only says which task instance and which image of its result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, StreamingResponse

from flux_provider.plugins import access, pages
from flux_provider.plugins.paths import URL_PREFIX, image_path
from flux_provider.plugins.results import (
    FluxResult,
    Image,
    TaskKey,
    run_results,
    task_result,
    task_state,
)

CHUNK_BYTES = 256 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


def _user() -> Any:
    from airflow.api_fastapi.core_api.security import get_user

    return Depends(get_user)


User = Annotated[Any, _user()]


def _session() -> Iterator[Any]:
    from airflow.utils.session import create_session

    with create_session(scoped=False) as session:
        yield session


Session = Annotated[Any, Depends(_session)]


def _map_index(segment: str) -> int:
    """The map index in a path: a number, or ``{MAP_INDEX}`` left unreplaced by the UI on the
    page of a task instance that is not mapped (``-1``)."""
    if segment == "{MAP_INDEX}":
        return -1
    try:
        return int(segment)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, f"map index must be a number, got {segment!r}"
        ) from None


def _image_address(request: Request) -> pages.ImageAddress:
    """Stored copies through this app; otherwise the API's own http(s) URL."""
    root = request.scope.get("root_path") or URL_PREFIX

    def address(result: FluxResult, image: Image) -> str | None:
        if image.location is not None:
            return image_path(result.key, image.index, root=root)
        if image.result_url and image.result_url.startswith(("https://", "http://")):
            return image.result_url
        return None

    return address


def _stream(session: Any, key: TaskKey, index: int) -> StreamingResponse:
    from airflow.sdk import ObjectStoragePath

    result = task_result(session, key)
    images = result.images if result is not None else []
    if not 0 <= index < len(images):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such image in this task's result")
    image = images[index]
    if image.location is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this image has no stored copy")
    path = ObjectStoragePath(image.location)
    if not path.exists():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the stored copy is missing")

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as source:  # type: ignore[no-untyped-call]
            while chunk := source.read(CHUNK_BYTES):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type=image.content_type,
        headers={
            "Cache-Control": "private, max-age=300",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'inline; filename="{path.name}"',
        },
    )


def create_app() -> FastAPI:
    """The app; its routes open a database session each, like Airflow's own API."""
    app = FastAPI(title="FLUX images", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/ti/{dag_id}/{run_id}/{task_id}/{map_index}", response_class=HTMLResponse)
    def task_images(
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str,
        request: Request,
        user: User,
        session: Session,
    ) -> HTMLResponse:
        access.authorize(user, dag_id)
        key = TaskKey(dag_id, run_id, task_id, _map_index(map_index))
        result = task_result(session, key)
        state = task_state(session, key) if result is None else None
        html = pages.task_page(key, result, state, _image_address(request))
        return HTMLResponse(html, headers=_NO_STORE)

    @app.get("/run/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_gallery(
        dag_id: str, run_id: str, request: Request, user: User, session: Session
    ) -> HTMLResponse:
        access.authorize(user, dag_id)
        results = run_results(session, dag_id, run_id)
        html = pages.gallery_page(dag_id, run_id, results, _image_address(request))
        return HTMLResponse(html, headers=_NO_STORE)

    @app.get("/images/{dag_id}/{run_id}/{task_id}/{map_index}/{index}")
    def stored_image(
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str,
        index: int,
        user: User,
        session: Session,
    ) -> StreamingResponse:
        access.authorize(user, dag_id)
        return _stream(session, TaskKey(dag_id, run_id, task_id, _map_index(map_index)), index)

    return app
