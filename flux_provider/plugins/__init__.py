"""The FLUX images plugin: a tab on the task-instance page and a gallery on the DAG-run page.

:mod:`~flux_provider.plugins.flux_images` registers it with Airflow (through the provider info
and the ``airflow.plugins`` entry point); the FastAPI app it mounts in the API server is built
on its first request, so no other Airflow process imports FastAPI for it.
"""
