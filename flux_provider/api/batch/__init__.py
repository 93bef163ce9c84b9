"""Many generations as one batch (no Airflow imports).

* :mod:`~flux_provider.api.batch.inputs`: the items from ``prompts`` or ``inputs`` and shared
  defaults, each validated before anything is sent;
* :mod:`~flux_provider.api.batch.items`: each item's record and what a try does with it;
* :mod:`~flux_provider.api.batch.journal`: the records kept beside the images, so nothing the
  API accepted is ever submitted again;
* :mod:`~flux_provider.api.batch.runner`: one try: up to ``max_in_flight`` generating, each
  stored as it ends.
"""

from __future__ import annotations

from flux_provider.api.batch.inputs import batch_inputs
from flux_provider.api.batch.items import BatchCounts, ItemRecord, ItemState, plan_try
from flux_provider.api.batch.journal import BatchJournal, journal_key
from flux_provider.api.batch.runner import BatchEnd, BatchIO, BatchRunner, BatchSettings

__all__ = [
    "BatchCounts",
    "BatchEnd",
    "BatchIO",
    "BatchJournal",
    "BatchRunner",
    "BatchSettings",
    "ItemRecord",
    "ItemState",
    "batch_inputs",
    "journal_key",
    "plan_try",
]
