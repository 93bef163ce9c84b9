"""An embedded fake of the FLUX task API for testing DAGs and clients without the network.

Start a :class:`FakeFluxServer`, point the code under test at its :attr:`~FakeFluxServer.base_url`
and script its behaviour with :class:`Fault`, ``fail_next_tasks()``, ``complete()`` and
``fail()``. It serves with the standard library's HTTP server and never imports Airflow.
pytest users can enable the ``flux_fake_server`` fixture with
``pytest_plugins = ["flux_provider.testing.pytest_plugin"]``.
"""

from __future__ import annotations

from .faults import Fault, FaultEndpoint
from .png import encode_png, image_size, render_image
from .server import FakeFluxServer
from .stats import FakeStats, RecordedRequest
from .tasks import FakeTask, TaskState

__all__ = [
    "FakeFluxServer",
    "FakeStats",
    "FakeTask",
    "Fault",
    "FaultEndpoint",
    "RecordedRequest",
    "TaskState",
    "encode_png",
    "image_size",
    "render_image",
]
