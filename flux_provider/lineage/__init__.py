"""OpenLineage for generations (:mod:`~flux_provider.lineage.openlineage`).

Imported only by the operators' and the sensor's ``get_openlineage_facets_on_*`` methods, so
``apache-airflow-providers-openlineage`` is needed only where lineage is collected.
"""
