"""Apache Airflow provider for Black Forest Labs FLUX.2 [max] image generation.

The package's layers, each a subpackage (data flows from the top down, never back up)::

    operators/  sensors/     Airflow tasks: validate, submit, wait (deferred), deliver
    triggers/                async polling inside the triggerer
    hooks/                   an Airflow connection turned into the API client: the one door
    links/  lineage/         the result's extra link; OpenLineage facets
    plugins/                 the images tab, the run gallery, the human-review body
    api/                     the Crun task API over httpx (imports nothing from Airflow)
    testing/                 the embedded fake API and its pytest plugin

Importing this package imports nothing from Airflow: ``get_provider_info`` is plain data, read
by Airflow through the ``apache_airflow_provider`` entry point.
"""

from __future__ import annotations

__version__ = "0.1.0"
"""The package's version: the build reads it from here (``[tool.hatch.version]``)."""

DISTRIBUTION = "airflow-provider-flux"
"""The distribution's name on a package index (the provider info's ``package-name``)."""

# After __version__: the provider info (and the API layer it reads its defaults from) use it.
from flux_provider.get_provider_info import get_provider_info  # noqa: E402

__all__ = ["DISTRIBUTION", "__version__", "get_provider_info"]
