"""An embedded fake of the FLUX.2 [max] task API for testing DAGs and clients without the network.

Start a :class:`FakeFluxServer`, point the code under test at its :attr:`~FakeFluxServer.base_url`
and script its behaviour with :class:`Fault`, ``fail_next_tasks()``, ``complete()``,
``fail()``, ``disable_key()`` and the wire-shape options (:data:`RESULT_SHAPES`,
:data:`FAILURE_SHAPES`, ``status_words``). It serves with the standard library's HTTP server and
never imports Airflow. :class:`FakeFluxProcess` runs the same fake in a child process.
``max_in_flight`` enforces the service's limit on tasks in flight. pytest users enable the
``flux_fake_server`` and ``flux_airflow_home`` fixtures (a throwaway, migrated ``AIRFLOW_HOME``
for ``dag.test()``) with ``pytest_plugins = ["flux_provider.testing.pytest_plugin"]``.
"""

from __future__ import annotations

from .faults import FAULT_ENDPOINTS, Fault, FaultEndpoint
from .png import encode_png, image_size, render_image
from .process import FakeFluxProcess
from .server import FakeFluxServer
from .shapes import (
    FAILURE_SHAPES,
    FAKE_TASK_STATUSES,
    RESULT_SHAPES,
    FailureShape,
    FakeTaskStatus,
    ResultShape,
)
from .stats import FakeStats, RecordedRequest
from .tasks import FakeTask
from .wire import RejectedRequestError

__all__ = [
    "FAILURE_SHAPES",
    "FAKE_TASK_STATUSES",
    "FAULT_ENDPOINTS",
    "RESULT_SHAPES",
    "FailureShape",
    "FakeFluxProcess",
    "FakeFluxServer",
    "FakeStats",
    "FakeTask",
    "FakeTaskStatus",
    "Fault",
    "FaultEndpoint",
    "RecordedRequest",
    "RejectedRequestError",
    "ResultShape",
    "encode_png",
    "image_size",
    "render_image",
]
