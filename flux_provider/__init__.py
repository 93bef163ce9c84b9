"""Apache Airflow provider for Black Forest Labs FLUX.2 [max] image generation.

Importing this package imports nothing from Airflow: ``get_provider_info`` is
plain data, read by Airflow through the ``apache_airflow_provider`` entry point.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_INTEGRATION = "FLUX"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata: package, integration, hooks, operators, sensors, triggers, links."""
    return {
        "package-name": "airflow-provider-flux",
        "name": "FLUX",
        "description": "Generate images with Black Forest Labs FLUX.2 max through its task API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://bfl.ai/models/flux-2",
                "tags": ["ai", "service"],
            }
        ],
        "hooks": [{"integration-name": _INTEGRATION, "python-modules": ["flux_provider.hooks"]}],
        "operators": [
            {"integration-name": _INTEGRATION, "python-modules": ["flux_provider.operators"]}
        ],
        "sensors": [
            {"integration-name": _INTEGRATION, "python-modules": ["flux_provider.sensors"]}
        ],
        "triggers": [
            {"integration-name": _INTEGRATION, "python-modules": ["flux_provider.triggers"]}
        ],
        "extra-links": ["flux_provider.links.FluxResultLink"],
        "connection-types": [
            {
                "hook-class-name": "flux_provider.hooks.FluxHook",
                "hook-name": "Flux",
                "connection-type": "flux",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"host": "API base URL", "password": "API key"},
                    "placeholders": {"host": "https://api.kie.ai", "password": "your API key"},
                },
                "conn-fields": {
                    "header_name": {
                        "label": "Auth header",
                        "schema": {"type": ["string", "null"], "default": "x-api-key"},
                        "description": "Header carrying the key: x-api-key, or Authorization "
                        "(sent as 'Bearer <key>')",
                    },
                    "create_path": {
                        "label": "Create-task path",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "/api/v1/jobs/createTask",
                        },
                    },
                    "info_path": {
                        "label": "Task-info path",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "/api/v1/jobs/recordInfo",
                        },
                    },
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 30},
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
