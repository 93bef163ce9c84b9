"""``FluxImagesPlugin``: registers the FLUX images tab, the run gallery and their app.

Airflow imports plugins in every process (workers and triggerers too), so this module stays
light: the FastAPI app is built on the first request the API server routes to it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from flux_provider.plugins.paths import URL_PREFIX


class LazyApp:
    """An ASGI app that builds :func:`flux_provider.plugins.app.create_app` on its first call,
    inside :class:`~flux_provider.plugins.headers.SecurityHeaders`."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection with the real app."""
        if self._app is None:
            from flux_provider.plugins.app import create_app
            from flux_provider.plugins.headers import SecurityHeaders

            self._app = SecurityHeaders(create_app())
        await self._app(scope, receive, send)


class FluxImagesPlugin(AirflowPlugin):
    """A "FLUX images" tab on task instances and a "FLUX gallery" tab on DAG runs.

    Both are external views (Airflow 3.1+) showing pages of the app mounted at ``/flux``; the
    hrefs are relative, so they follow ``[api] base_url``.
    """

    name = "flux_images"
    fastapi_apps = [  # noqa: RUF012 - Airflow reads these class attributes
        {"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "FLUX images"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "FLUX images",
            "href": "flux/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}/{MAP_INDEX}",
            "destination": "task_instance",
            "url_route": "flux_images",
        },
        {
            "name": "FLUX gallery",
            "href": "flux/run/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "flux_gallery",
        },
    ]
