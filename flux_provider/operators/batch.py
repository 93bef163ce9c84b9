"""``FluxGenerateImageBatchOperator``: many generations in one task, bound by the API.

The worker validates every item, checks the credit limits for the batch, records the inputs in
the batch's journal and defers; the triggerer (:class:`~flux_provider.triggers.batch.
FluxBatchTrigger`) keeps up to ``max_in_flight`` generating and stores each image as its
generation ends; the worker resumes once, reads the journal and returns every item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowException, conf
from airflow.sdk import BaseOperator, ObjectStoragePath

from flux_provider.api.batch import (
    BatchCounts,
    BatchJournal,
    BatchSettings,
    ItemRecord,
    ItemState,
    batch_inputs,
    journal_key,
    plan_try,
)
from flux_provider.api.batch.runner import ended_items
from flux_provider.api.downloads import DEFAULT_MAX_IMAGE_BYTES
from flux_provider.api.errors import FluxError, InvalidInputError
from flux_provider.api.formatting import count_text, credits_text
from flux_provider.api.models import MODEL_NAME, Flux2MaxInput, check_model
from flux_provider.api.polling import DEFAULT_MAX_CONSECUTIVE_ERRORS, WaitSettings
from flux_provider.api.results import GenerationResult, stored_image_from
from flux_provider.hooks import FluxHook
from flux_provider.hooks.storage import storage_path
from flux_provider.links import FluxResultLink, persist_result_link
from flux_provider.metrics import FluxMetrics
from flux_provider.operators.credit_checks import check_credit_limit, check_credits
from flux_provider.operators.failures import fail, failing_the_task, keeps_failure_message
from flux_provider.operators.references import resolve_references
from flux_provider.operators.waiting import result_link_target, wait_deadline
from flux_provider.triggers.batch import FluxBatchTrigger, run_batch_try
from flux_provider.triggers.events import BatchEvent, MalformedEventError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from flux_provider.lineage.openlineage import Lineage

DEFAULT_BATCH_TIMEOUT = 6 * 3600.0
"""Seconds a batch may take before a try ends with a (retryable) timeout."""


class FluxGenerateImageBatchOperator(BaseOperator):
    """Generate many images with FLUX.2 [max] in one task instance.

    Give ``prompts`` (a list of texts) or ``inputs`` (a list of input mappings: ``prompt``,
    ``input_urls``, ``aspect_ratio``, ``resolution``, ``seed`` and extra fields); the shared
    ``aspect_ratio``, ``resolution``, ``seed`` and ``extra_input`` fill what an item leaves
    unset. Every item is validated before anything is sent. Never more than ``max_in_flight``
    generations run at once; a service that answers 429 is waited for, never a failure. Every
    submitted task is recorded in the batch's journal (in ``download_to``) the moment the API
    accepts it, so no retry, dead worker or restarted triggerer submits it again; each image is
    stored as soon as its generation ends.

    Returns ``{"items": [...], "succeeded": n, "failed": m, "credits": total}``, each item the
    single operator's result plus ``index`` (and ``error`` when it failed). More than
    ``allowed_failures`` failed items fail the task once every other item has ended; a retry
    re-attaches to running and succeeded items and submits only the failed ones a retry can
    help (moderation and validation failures are never submitted again).

    :param prompts: the prompts, one item each (templated; an upstream XCom works).
    :param inputs: the items as input mappings (templated), instead of ``prompts``.
    :param aspect_ratio: shared default, e.g. ``"1:1"``, ``"16:9"``.
    :param resolution: shared default, ``"1K"`` or ``"2K"``.
    :param seed: shared default seed.
    :param extra_input: shared default extra ``input`` fields (templated).
    :param download_to: the folder for the images and the batch's journal (templated; required:
        result URLs expire).
    :param max_in_flight: the most generations running at once (the service's limit).
    :param timeout: seconds for the whole batch (each try); then a retryable failure whose
        retry re-attaches.
    :param allowed_failures: failed items the task tolerates and still succeeds.
    :param reattach: re-attach to what earlier tries submitted (``False`` starts afresh).
    :param min_balance: fail without submitting when the account has fewer credits.
    :param max_credits: fail without submitting when the items still to submit would cost more
        (one estimate call per group of equally priced items).
    :param flux_conn_id: the Airflow connection (type ``flux``).
    :param deferrable: run the batch in the triggerer (otherwise on the worker, one slot).
    :param poll_interval: fixed seconds between polls of each task; ``None`` = adaptive.
    :param max_consecutive_errors: transient poll failures in a row absorbed per task.
    :param max_download_bytes: the size cap of each image.
    """

    template_fields: Sequence[str] = ("prompts", "inputs", "extra_input", "download_to")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "inputs": "json",
        "extra_input": "json",
    }
    operator_extra_links = (FluxResultLink(),)
    ui_color = "#e4d4ff"

    def __init__(
        self,
        *,
        download_to: str | ObjectStoragePath,
        prompts: Sequence[str] | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        seed: int | None = None,
        extra_input: dict[str, Any] | None = None,
        model: str = MODEL_NAME,
        max_in_flight: int = 16,
        timeout: float = DEFAULT_BATCH_TIMEOUT,
        allowed_failures: int = 0,
        reattach: bool = True,
        min_balance: float | None = None,
        max_credits: float | None = None,
        flux_conn_id: str = FluxHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        max_download_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_model(model)
        self.wait_settings = WaitSettings(poll_interval, timeout, max_consecutive_errors)
        if (prompts is None) == (inputs is None):
            raise ValueError("give the batch either prompts or inputs (exactly one of them)")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        if not isinstance(allowed_failures, int) or allowed_failures < 0:
            raise ValueError(f"allowed_failures must be an integer >= 0, got {allowed_failures!r}")
        if max_download_bytes <= 0:
            raise ValueError(f"max_download_bytes must be > 0, got {max_download_bytes}")
        check_credit_limit("min_balance", min_balance)
        check_credit_limit("max_credits", max_credits)
        self._check_shared_defaults(aspect_ratio, resolution, seed)
        self.prompts = prompts
        self.inputs = inputs
        self.aspect_ratio = aspect_ratio
        self.resolution = resolution
        self.seed = seed
        self.extra_input = extra_input
        self.model = model
        self.download_to = download_to
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.allowed_failures = allowed_failures
        self.reattach = reattach
        self.min_balance = min_balance
        self.max_credits = max_credits
        self.flux_conn_id = flux_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_consecutive_errors = max_consecutive_errors
        self.max_download_bytes = max_download_bytes
        self.failure_message: str | None = None
        """Why this try failed, for the lineage failure event."""
        self.batch_result: dict[str, Any] | None = None
        """What this instance returned, once it has (its lineage events read it)."""
        self.batch_inputs: list[Flux2MaxInput] | None = None
        """The inputs the delivered batch ran with (from its journal)."""

    @staticmethod
    def _check_shared_defaults(
        aspect_ratio: str | None, resolution: str | None, seed: int | None
    ) -> None:
        """The shared defaults are not templated: check them when the DAG is parsed."""
        shared = {"aspect_ratio": aspect_ratio, "resolution": resolution, "seed": seed}
        batch_inputs(["-"], None, shared)

    @cached_property
    def hook(self) -> FluxHook:
        """The hook for ``flux_conn_id``."""
        return FluxHook(flux_conn_id=self.flux_conn_id)

    def build_inputs(self) -> list[Flux2MaxInput]:
        """Every item's validated input (after templates were rendered)."""
        if self.extra_input is not None and not isinstance(self.extra_input, Mapping):
            raise InvalidInputError(
                f"extra_input must be a mapping, got {type(self.extra_input).__name__}"
            )
        shared = {
            **(self.extra_input or {}),
            "aspect_ratio": self.aspect_ratio,
            "resolution": self.resolution,
            "seed": self.seed,
        }
        return batch_inputs(self.prompts, self.inputs, shared, _read_references)

    def _journal(self, context: Context) -> BatchJournal:
        ti = context["ti"]
        map_index = ti.map_index if ti.map_index is not None else -1
        key = journal_key(ti.dag_id, ti.run_id, ti.task_id, map_index)
        return BatchJournal(self._folder(), key)

    def _folder(self) -> ObjectStoragePath:
        if self.download_to is None:
            raise InvalidInputError("download_to is required: a batch stores every image")
        return storage_path(self.download_to)

    @keeps_failure_message
    def execute(self, context: Context) -> Any:
        """Validate, check credits, record the inputs, then run the batch (deferred)."""
        with failing_the_task(self.log):
            flux_inputs = self.build_inputs()
            journal = self._journal(context)
        with failing_the_task(self.log):
            self.hook.get_conn()  # a misconfigured connection fails here, without retry
        records = self._records_to_keep(journal, flux_inputs)
        try_number = context["ti"].try_number
        plan = plan_try(records, len(flux_inputs), try_number)
        self.log.info(
            "Batch of %s: %s already stored, %s to re-attach, %s to submit",
            count_text(len(flux_inputs), "item"),
            f"{sum(r.state is ItemState.SUCCEEDED for r in records.values()):,}",
            f"{len(plan.reattach):,}",
            f"{len(plan.submit):,}",
        )
        with failing_the_task(self.log):
            check_credits(
                self.hook,
                [flux_inputs[index] for index in plan.submit],
                model=self.model,
                min_balance=self.min_balance,
                max_credits=self.max_credits,
                log=self.log,
            )
            journal.write_inputs(flux_inputs)
        if not plan.submit and not plan.reattach:
            return self._deliver(context, journal, flux_inputs)
        deadline, deadline_name = wait_deadline(
            self.timeout, self.execution_timeout, getattr(context["ti"], "start_date", None)
        )
        if not self.deferrable:
            return self._run_on_worker(context, journal, deadline, deadline_name, try_number)
        self.defer(
            trigger=FluxBatchTrigger(
                self.flux_conn_id,
                download_to=str(self._folder()),
                journal_key=journal.root.name,
                try_number=try_number,
                deadline=deadline,
                deadline_name=deadline_name,
                max_in_flight=self.max_in_flight,
                poll_interval=self.poll_interval,
                max_consecutive_errors=self.max_consecutive_errors,
                max_download_bytes=self.max_download_bytes,
                dag_id=context["ti"].dag_id,
                task_id=context["ti"].task_id,
            ),
            method_name="execute_complete",
            timeout=None,
        )

    def _records_to_keep(
        self, journal: BatchJournal, flux_inputs: Sequence[Flux2MaxInput]
    ) -> dict[int, ItemRecord]:
        """The journal's records of items whose input did not change since they were made."""
        if not self.reattach:
            journal.clear()
            return {}
        records = journal.records()
        if not records:
            return {}
        try:
            recorded = journal.read_inputs()
        except FileNotFoundError:
            recorded = []
        kept = {
            index: record
            for index, record in records.items()
            if index < len(recorded)
            and index < len(flux_inputs)
            and recorded[index] == flux_inputs[index]
        }
        if len(kept) < len(records):
            self.log.warning(
                "%s changed since an earlier try: generating them anew",
                count_text(len(records) - len(kept), "item"),
            )
        return kept

    def _run_on_worker(
        self,
        context: Context,
        journal: BatchJournal,
        deadline: float,
        deadline_name: str,
        try_number: int,
    ) -> Any:
        settings = BatchSettings(
            max_in_flight=self.max_in_flight,
            deadline=deadline,
            deadline_name=deadline_name,
            wait=self.wait_settings,
        )
        with failing_the_task(self.log):
            end = asyncio.run(
                run_batch_try(
                    self.hook,
                    download_to=str(self._folder()),
                    journal_key=journal.root.name,
                    try_number=try_number,
                    settings=settings,
                    max_download_bytes=self.max_download_bytes,
                    log=self.log,
                    metrics=FluxMetrics.of(context),
                    config=self.hook.config,
                )
            )
        return self._finish(context, BatchEvent.from_end(end), journal)

    @keeps_failure_message
    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Resume after the trigger: read the journal, then deliver or fail."""
        try:
            ended = BatchEvent.parse(event)
        except MalformedEventError as exc:
            raise AirflowException(str(exc)) from None
        with failing_the_task(self.log):
            return self._finish(context, ended, self._journal(context))

    def _finish(self, context: Context, ended: BatchEvent, journal: BatchJournal) -> Any:
        if ended.status in ("timeout", "error"):
            counts = f" ({ended.counts.progress_line()})" if ended.counts else ""
            fail(
                FluxError(f"{ended.message}{counts}", retryable=ended.retryable),
                self.log,
            )
        flux_inputs = journal.read_inputs()
        records = journal.records()
        if not ended_items(records, len(flux_inputs)):
            self.log.info("The batch has items still generating: waiting for them")
            return self.execute(context)
        return self._deliver(context, journal, flux_inputs)

    def _deliver(
        self, context: Context, journal: BatchJournal, flux_inputs: Sequence[Flux2MaxInput]
    ) -> dict[str, Any]:
        """The return value, from the journal: the inputs this try ran with and each record."""
        self.batch_inputs = list(flux_inputs)
        count = len(flux_inputs)
        records = journal.records()
        counts = BatchCounts.of(records.values(), count)
        self.log.info("Batch done: %s", counts.progress_line())
        if counts.failed > self.allowed_failures:
            self._fail_for_failures(records, counts)
        items = [_item_result(records.get(i), i, flux_inputs[i]) for i in range(count)]
        result = {
            "items": items,
            "succeeded": counts.stored,
            "failed": counts.failed,
            "credits": counts.credits,
        }
        self.batch_result = result
        generated = [_generated(records.get(i), flux_inputs[i]) for i in range(count)]
        first = next((g for g in generated if g is not None), None)
        persist_result_link(context, result_link_target(first) if first is not None else None)
        stored = [location for g in generated if g is not None for location in g.locations]
        for outlet in self.outlets:
            extra: dict[str, Any] = {
                "stored": stored,
                "succeeded": counts.stored,
                "failed": counts.failed,
                "credits": counts.credits,
            }
            context["outlet_events"][outlet].extra.update(extra)
        journal.clear()
        return result

    def _fail_for_failures(self, records: Mapping[int, ItemRecord], counts: BatchCounts) -> None:
        failed = [r for r in records.values() if r.state is ItemState.FAILED]
        helped = [r for r in failed if r.on_retry != "never"]
        shown = "; ".join(f"item {r.index}: {r.error}" for r in failed[:5])
        fail(
            FluxError(
                f"{count_text(counts.failed, 'item')} failed, more than allowed_failures="
                f"{self.allowed_failures} ({count_text(len(helped), 'item')} a retry can help "
                f"with, {credits_text(counts.credits)} credits spent): {shown}",
                retryable=bool(helped),
            ),
            self.log,
        )

    def get_openlineage_facets_on_start(self) -> Lineage | None:
        """OpenLineage at the start: every reference image the items name."""
        return self._lineage()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """OpenLineage of the batch: every reference image in, every stored image out."""
        return self._lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Lineage | None:
        """OpenLineage of a failed try, with the error message."""
        return self._lineage(failure_message=self.failure_message)

    def _lineage(self, failure_message: str | None = None) -> Lineage | None:
        try:
            from flux_provider.lineage import openlineage as lineage
        except ImportError:
            return None
        requests = self.batch_inputs
        if requests is None:
            try:
                requests = self.build_inputs()
            except InvalidInputError:
                requests = []
        items = self.inputs if isinstance(self.inputs, (list, tuple)) else []
        references = [
            url
            for item in items
            if isinstance(item, Mapping)
            for url in lineage.references_of(item.get("input_urls") or item.get("img_urls"))
        ]
        return lineage.batch_lineage(
            requests=requests,
            references=references,
            model=self.model,
            result=self.batch_result,
            failure_message=failure_message,
        )


def _read_references(references: Any, field: str) -> Any:
    return resolve_references(references, field=field)


def _item_result(record: ItemRecord | None, index: int, request: Flux2MaxInput) -> dict[str, Any]:
    """One item of the return value: the single operator's result keys, ``index`` and, for a
    failed item, ``error`` and ``retryable``."""
    generated = _generated(record, request)
    if generated is not None:
        return {"index": index, **generated.to_xcom()}
    return {
        "index": index,
        **(record.task if record is not None and record.task else {}),
        "flux_task_id": record.flux_task_id if record is not None else None,
        "state": "failed",
        "input": request.summary(),
        "error": record.error if record is not None else "never submitted",
        "retryable": record is None or record.on_retry != "never",
    }


def _generated(record: ItemRecord | None, request: Flux2MaxInput) -> GenerationResult | None:
    """A succeeded item's result, typed; ``None`` for any other."""
    if record is None or record.state is not ItemState.SUCCEEDED or record.info is None:
        return None
    stored = [stored_image_from(image) for image in record.stored or ()]
    return GenerationResult(task=record.info, request=request.summary(), stored=stored)
