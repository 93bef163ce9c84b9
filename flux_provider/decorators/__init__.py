"""TaskFlow decorators: ``@task.flux_image`` and ``@task.flux_image_batch``.

Registered in the provider info's ``task-decorators``, so Airflow's ``task`` object offers them
once the provider is installed.
"""

from __future__ import annotations

from flux_provider.decorators.flux_image import flux_image_batch_task, flux_image_task

__all__ = ["flux_image_batch_task", "flux_image_task"]
