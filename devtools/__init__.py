"""This repository's own development tools, never shipped in the wheel.

The Airflow instances the end-to-end tests, the benchmarks and the demo run: ``airflow
standalone`` (:mod:`~devtools.standalone`), a distributed Airflow on PostgreSQL, Redis and
Celery (:mod:`~devtools.distributed`), the REST driver they share (:mod:`~devtools.airflow_api`),
the throwaway servers, the connection census and samplers, and ``make demo`` / ``make demo-ui``.
Users test their own DAGs with :mod:`flux_provider.testing` instead.
"""
