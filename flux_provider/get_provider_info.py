"""The provider's metadata for Airflow (the ``apache_airflow_provider`` entry point).

Plain data: the package, its hooks, operators, sensors, triggers, extra links, plugin, task
decorators and the connection form (whose defaults come from :mod:`flux_provider.api.config`).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from flux_provider import DISTRIBUTION, __version__
from flux_provider.api.config import (
    DEFAULT_AUTH_HEADER,
    DEFAULT_BALANCE_PATH,
    DEFAULT_BASE_URL,
    DEFAULT_CREATE_PATH,
    DEFAULT_ESTIMATE_PATH,
    DEFAULT_INFO_PATH,
    DEFAULT_TIMEOUT,
)

_INTEGRATION = "FLUX"
_PATHS = (
    ("create_path", "Create-task path", DEFAULT_CREATE_PATH),
    ("info_path", "Task-info path", DEFAULT_INFO_PATH),
    ("balance_path", "Balance path", DEFAULT_BALANCE_PATH),
    ("estimate_path", "Estimate-credits path", DEFAULT_ESTIMATE_PATH),
)


def documentation_url() -> str | None:
    """The installed distribution's ``Documentation`` project URL (``[project.urls]``)."""
    try:
        entries = metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in entries:
        name, _, url = entry.partition(",")
        if name.strip().lower() == "documentation":
            return str(url).strip()
    return None


def get_provider_info() -> dict[str, Any]:
    """Provider metadata: package, integration, hooks, operators, sensors, triggers, links."""
    documentation = documentation_url()
    return {
        "package-name": DISTRIBUTION,
        **({"documentation-url": documentation} if documentation else {}),
        "name": "FLUX",
        "description": "Black Forest Labs FLUX.2 [max] image generation through Crun's task API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://docs.crun.ai",
                "tags": ["ai", "service"],
            }
        ],
        "hooks": [
            {"integration-name": _INTEGRATION, "python-modules": ["flux_provider.hooks.flux"]}
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "flux_provider.operators.generate",
                    "flux_provider.operators.batch",
                ],
            }
        ],
        "sensors": [
            {"integration-name": _INTEGRATION, "python-modules": ["flux_provider.sensors.task"]}
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["flux_provider.triggers.task", "flux_provider.triggers.batch"],
            }
        ],
        "task-decorators": [
            {
                "name": "flux_image",
                "class-name": "flux_provider.decorators.flux_image.flux_image_task",
            },
            {
                "name": "flux_image_batch",
                "class-name": "flux_provider.decorators.flux_image.flux_image_batch_task",
            },
        ],
        "extra-links": ["flux_provider.links.result.FluxResultLink"],
        "plugins": [
            {
                "name": "flux_images",
                "plugin-class": "flux_provider.plugins.flux_images.FluxImagesPlugin",
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "flux_provider.hooks.flux.FluxHook",
                "hook-name": "Flux",
                "connection-type": "flux",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"host": "API base URL", "password": "API key"},
                    "placeholders": {"host": DEFAULT_BASE_URL, "password": "your API key"},
                },
                "conn-fields": {
                    "header_name": {
                        "label": "Auth header",
                        "schema": {"type": ["string", "null"], "default": DEFAULT_AUTH_HEADER},
                        "description": "Header carrying the key: x-api-key, or Authorization "
                        "(sent as 'Bearer <key>')",
                    },
                    **{
                        name: {
                            "label": label,
                            "schema": {"type": ["string", "null"], "default": default},
                        }
                        for name, label, default in _PATHS
                    },
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": DEFAULT_TIMEOUT},
                    },
                    "allow_insecure_http": {
                        "label": "Allow plain http to a remote host",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "Only for trusted networks: the key travels unencrypted",
                    },
                },
            }
        ],
    }
