"""The plugin's FastAPI app, mounted by the API server under ``/flux``.

Routes (each authorised by :mod:`~flux_provider.plugins.access`):

* ``GET /ti/{dag_id}/{run_id}/{task_id}/{map_index}``: the task instance's images (HTML);
* ``GET /run/{dag_id}/{run_id}``: the run's gallery (HTML);
* ``GET /images/{dag_id}/{run_id}/{task_id}/{map_index}/{index}``: one stored image (the
  pages and the human-review form's body show it from here).

The request only says which task instance and which image of its result. An image is served
only when :func:`~flux_provider.plugins.stored.verified_image` vouches for it (the file the
operator wrote in the task instance's rendered ``download_to``, with the recorded size and
SHA-256, a raster image by its bytes), with the content type its bytes' signature names; any
other stored copy is a 404 and a warning naming the task instance, never the location. A page
links only stored copies whose location passes the same check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, StreamingResponse

from flux_provider.plugins import access, pages
from flux_provider.plugins.headers import SANDBOX_POLICY
from flux_provider.plugins.paths import URL_PREFIX, image_path, web_origin
from flux_provider.plugins.results import (
    FluxResult,
    Image,
    TaskKey,
    run_results,
    task_facts,
    task_result,
)
from flux_provider.plugins.stored import UnverifiedImageError, stored_file, verified_image

log = logging.getLogger(__name__)

NOT_SERVED = "this image's stored copy is missing or does not match its task's result"
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


def _refused(key: TaskKey, index: int, refusal: UnverifiedImageError) -> None:
    """Log a refused stored copy by its task instance and position, never its location."""
    log.warning(
        "FLUX images: not serving image %d of dag_id=%r run_id=%r task_id=%r map_index=%d: %s",
        index,
        key.dag_id,
        key.run_id,
        key.task_id,
        key.map_index,
        refusal,
    )


class _ImageAddresses:
    """Where a page loads each image from: a stored copy through this app when its location
    checks out, otherwise the API's own http(s) URL; remembers the origins the page's
    Content-Security-Policy must allow for them."""

    def __init__(self, request: Request) -> None:
        self.root = request.scope.get("root_path") or URL_PREFIX
        self.origins: set[str] = _own_origins(request)

    def __call__(self, result: FluxResult, image: Image) -> str | None:
        if image.location is not None:
            try:
                stored_file(
                    result.download_to,
                    image.generation.flux_task_id,
                    image.position,
                    image.location,
                )
            except UnverifiedImageError as refusal:
                _refused(result.key, image.index, refusal)
                return None
            return image_path(result.key, image.index, root=self.root)
        origin = web_origin(image.result_url) if image.result_url else None
        if origin is None:
            return None
        self.origins.add(origin)
        return image.result_url


def _own_origins(request: Request) -> set[str]:
    """The API server's origin as this request and ``[api] base_url`` name it. The UI shows the
    pages in iframes sandboxed without ``allow-same-origin``, where not every browser matches
    ``'self'`` against the page's own address."""
    from airflow.configuration import conf

    addresses = [str(request.base_url), conf.get("api", "base_url", fallback="") or ""]
    return {origin for origin in map(web_origin, addresses) if origin is not None}


def _page(html: str, addresses: _ImageAddresses) -> HTMLResponse:
    policy = pages.page_policy(addresses.origins)
    return HTMLResponse(html, headers={**_NO_STORE, "Content-Security-Policy": policy})


def _serve(session: Any, key: TaskKey, index: int) -> StreamingResponse:
    result = task_result(session, key)
    images = result.images if result is not None else []
    if result is None or not 0 <= index < len(images):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such image in this task's result")
    image = images[index]
    if image.location is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this image has no stored copy")
    try:
        verified = verified_image(
            result.download_to, image.generation.flux_task_id, image.position, image.stored
        )
    except UnverifiedImageError as refusal:
        _refused(key, index, refusal)
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_SERVED) from None
    return StreamingResponse(
        verified.chunks(),
        media_type=verified.content_type,
        headers={
            "Cache-Control": "private, max-age=300",
            "Content-Length": str(verified.size),
            "Content-Disposition": f'inline; filename="{verified.name}"',
            "Content-Security-Policy": SANDBOX_POLICY,
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
        facts = task_facts(session, key) if result is None else None
        addresses = _ImageAddresses(request)
        return _page(pages.task_page(key, result, facts, addresses), addresses)

    @app.get("/run/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_gallery(
        dag_id: str, run_id: str, request: Request, user: User, session: Session
    ) -> HTMLResponse:
        access.authorize(user, dag_id)
        results = run_results(session, dag_id, run_id)
        addresses = _ImageAddresses(request)
        return _page(pages.gallery_page(dag_id, run_id, results, addresses), addresses)

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
        return _serve(session, TaskKey(dag_id, run_id, task_id, _map_index(map_index)), index)

    return app
