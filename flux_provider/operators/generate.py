"""``FluxGenerateImageOperator``: validate, submit, wait (deferred by default), deliver."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperator, ObjectStoragePath

from flux_provider.api.config import DEFAULT_WAIT_TIMEOUT
from flux_provider.api.downloads import DEFAULT_MAX_IMAGE_BYTES, StoredImage
from flux_provider.api.errors import InvalidInputError
from flux_provider.api.formatting import bytes_text, count_text
from flux_provider.api.models import (
    MODEL_NAME,
    Flux2MaxInput,
    TaskInfo,
    TaskState,
    check_model,
    validate_input,
)
from flux_provider.api.polling import DEFAULT_MAX_CONSECUTIVE_ERRORS, WaitSettings
from flux_provider.api.results import GenerationResult
from flux_provider.hooks import FluxHook
from flux_provider.hooks.storage import storage_path
from flux_provider.links import FluxResultLink, persist_result_link
from flux_provider.metrics import FluxMetrics
from flux_provider.operators.credit_checks import check_credit_limit, check_credits
from flux_provider.operators.failures import fail, failing_the_task, keeps_failure_message
from flux_provider.operators.reattach import (
    STATE_KEY,
    earlier_task,
    pulled_reattached,
    share_task_id,
    state_store,
)
from flux_provider.operators.references import resolve_references
from flux_provider.operators.reuse import find_reusable, generation_key, write_manifest
from flux_provider.operators.waiting import FluxWaitMixin, result_link_target
from flux_provider.triggers.events import MalformedEventError, TaskEvent

if TYPE_CHECKING:
    from airflow.sdk import Context

    from flux_provider.lineage.openlineage import Lineage


class FluxGenerateImageOperator(FluxWaitMixin, BaseOperator):
    """Generate an image with FLUX.2 [max]: validate, submit, wait, return the result.

    The input is validated with :class:`~flux_provider.api.models.Flux2MaxInput`
    before any HTTP call. The submitted task id is pushed to XCom
    (``flux_task_id``) and saved in ``task_state_store`` the moment it exists,
    so a retry of this task instance re-attaches to a task that is still
    running or already succeeded instead of paying for a new one.

    :param prompt: the text prompt (templated).
    :param input_urls: reference images for edits, up to 8 http(s) URLs or
        ``data:image/...;base64,`` URIs (templated); sent as Crun's ``img_urls``.
    :param aspect_ratio: e.g. ``"1:1"``, ``"16:9"``, ``"auto"``.
    :param resolution: ``"1K"`` or ``"2K"``.
    :param seed: integer seed for reproducibility.
    :param extra_input: more ``input`` fields passed through untouched (templated).
    :param model: the API model name; only ``"flux-2-max"``.
    :param callback_url: URL the API POSTs to when the task ends (templated).
    :param flux_conn_id: the Airflow connection (type ``flux``).
    :param deferrable: poll in the triggerer (default ``[operators] default_deferrable``).
    :param wait_for_completion: ``False`` submits and returns the id at once.
    :param poll_interval: fixed seconds between polls; ``None`` = adaptive (2 s growing to 5 s).
    :param timeout: seconds to wait for the task before failing (retryable).
    :param max_consecutive_errors: transient poll failures in a row absorbed before failing.
    :param reattach: re-attach to the previous try's task instead of submitting again.
    :param download_to: folder to copy the images into (templated): a path or URL string
        (``/data/images``, ``s3://bucket/prefix``…) or an ``ObjectStoragePath``.
    :param max_download_bytes: per-image size cap for ``download_to``.
    :param min_balance: fail without submitting (and without retry) when the account has
        fewer credits than this; ``None`` (default) skips the check.
    :param max_credits: fail without submitting (and without retry) when the API estimates
        the task above this many credits; ``None`` (default) skips the check.
    :param reuse: return the stored images of an earlier identical generation (same model and
        input, same ``download_to``) without calling the API (see
        :mod:`flux_provider.operators.reuse`).
    """

    template_fields: Sequence[str] = (
        "prompt",
        "input_urls",
        "extra_input",
        "callback_url",
        "download_to",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"extra_input": "json"}
    operator_extra_links = (FluxResultLink(),)
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        prompt: str,
        input_urls: list[str] | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        seed: int | None = None,
        extra_input: dict[str, Any] | None = None,
        model: str = MODEL_NAME,
        callback_url: str | None = None,
        flux_conn_id: str = FluxHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_for_completion: bool = True,
        poll_interval: float | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        reattach: bool = True,
        download_to: str | ObjectStoragePath | None = None,
        max_download_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        min_balance: float | None = None,
        max_credits: float | None = None,
        reuse: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_model(model)
        if reuse and download_to is None:
            raise ValueError("reuse=True needs download_to: the images it reuses are stored there")
        self.configure_wait(
            flux_conn_id,
            deferrable,
            WaitSettings(poll_interval, timeout, max_consecutive_errors),
        )
        self.timeout = timeout
        check_credit_limit("min_balance", min_balance)
        check_credit_limit("max_credits", max_credits)
        # Fields that are not templated can be checked now, when the DAG is parsed.
        static = {"aspect_ratio": aspect_ratio, "resolution": resolution, "seed": seed}
        try:
            validate_input({"prompt": "-", **{k: v for k, v in static.items() if v is not None}})
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None
        if max_download_bytes <= 0:
            raise ValueError(f"max_download_bytes must be > 0, got {max_download_bytes}")
        self.prompt = prompt
        self.input_urls = input_urls
        self.aspect_ratio = aspect_ratio
        self.resolution = resolution
        self.seed = seed
        self.extra_input = extra_input
        self.model = model
        self.callback_url = callback_url
        self.wait_for_completion = wait_for_completion
        self.reattach = reattach
        self.download_to = download_to
        self.max_download_bytes = max_download_bytes
        self.min_balance = min_balance
        self.max_credits = max_credits
        self.reuse = reuse
        self.reattached = False
        """Whether this try re-attached to an earlier try's task instead of submitting."""
        self.flux_task_id: str | None = None
        """The API's task id once this try has submitted or re-attached to one."""
        self.failure_message: str | None = None
        """Why this try failed, for the lineage failure event."""

    def build_input(self) -> Flux2MaxInput:
        """The validated ``input`` object (after templates were rendered)."""
        if self.extra_input is not None and not isinstance(self.extra_input, Mapping):
            raise InvalidInputError(
                f"extra_input must be a mapping, got {type(self.extra_input).__name__}"
            )
        data: dict[str, Any] = dict(self.extra_input or {})
        named = {
            "prompt": self.prompt,
            "input_urls": self._references(),
            "aspect_ratio": self.aspect_ratio,
            "resolution": self.resolution,
            "seed": self.seed,
        }
        data.update({k: v for k, v in named.items() if v is not None})
        return validate_input(data)

    def _references(self) -> list[Any] | None:
        """``input_urls`` with stored references read and encoded, once per rendered value."""
        cached = self.__dict__.get("_resolved_references")
        if cached is not None and cached[0] is self.input_urls:
            return cached[1]  # type: ignore[no-any-return]
        resolved = resolve_references(self.input_urls)
        self.__dict__["_resolved_references"] = (self.input_urls, resolved)
        return resolved

    @keeps_failure_message
    def execute(self, context: Context) -> dict[str, Any]:
        """Submit (or re-attach), then wait according to the operator's mode."""
        try:
            flux_input = self.build_input()
        except InvalidInputError as exc:
            fail(exc, self.log)
        self.check_connection()
        if self.reuse:
            reused = self._reused(context, flux_input)
            if reused is not None:
                return reused
        store = state_store(context, self.log, reattach=self.reattach)
        previous = earlier_task(store, self.read_task, self.log)
        if previous is not None:
            flux_task_id, info = previous
            self.reattached = True
            FluxMetrics.of(context).reattached()
            self.flux_task_id = flux_task_id
            share_task_id(context, flux_task_id, reattached=True)
            if not self.wait_for_completion:
                state = info.state.value if info is not None else TaskState.UNKNOWN.value
                return {"flux_task_id": flux_task_id, "state": state}
            return self.wait_for_result(context, flux_task_id, info)
        with failing_the_task(self.log):
            check_credits(
                self.hook,
                [flux_input],
                model=self.model,
                min_balance=self.min_balance,
                max_credits=self.max_credits,
                log=self.log,
            )
            flux_task_id = self.hook.create_task(
                flux_input, model=self.model, callback_url=self.callback_url
            )
        if store is not None:
            store.set(STATE_KEY, flux_task_id)
        FluxMetrics.of(context).submitted()
        self.log.info("Submitted flux task %s", flux_task_id)
        self.flux_task_id = flux_task_id
        share_task_id(context, flux_task_id, reattached=False)
        if not self.wait_for_completion:
            return {"flux_task_id": flux_task_id, "state": "submitted"}
        return self.wait_for_result(context, flux_task_id)

    @keeps_failure_message
    def execute_complete(
        self, context: Context, event: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume after the trigger fired (see :meth:`FluxWaitMixin.execute_complete`).

        This runs on a new operator instance, which first learns what its lineage
        events need: the task id (from the event) and whether the try re-attached
        (from this try's XCom).
        """
        with contextlib.suppress(MalformedEventError):  # the mixin fails the task with the reason
            self.flux_task_id = TaskEvent.parse(event).flux_task_id
        self.reattached = pulled_reattached(context, self.task_id, self.log)
        return super().execute_complete(context, event)

    def get_openlineage_facets_on_start(self) -> Lineage | None:
        """OpenLineage at the start: the reference images and what is asked for.

        ``None`` when ``apache-airflow-providers-openlineage`` is not installed.
        """
        return self._lineage(started=True)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """OpenLineage of a successful try: reference images in, images out, the run's facets.

        ``None`` when ``apache-airflow-providers-openlineage`` is not installed.
        """
        return self._lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Lineage | None:
        """OpenLineage of a failed try: as on completion, with the error message.

        ``None`` when ``apache-airflow-providers-openlineage`` is not installed.
        """
        return self._lineage(failure_message=self.failure_message)

    def _lineage(
        self, *, started: bool = False, failure_message: str | None = None
    ) -> Lineage | None:
        try:
            from flux_provider.lineage import openlineage as lineage
        except ImportError:
            return None
        try:
            request: Flux2MaxInput | None = self.build_input()
        except InvalidInputError:
            request = None
        return lineage.generation_lineage(
            request=request,
            references=lineage.references_of(self.input_urls),
            model=self.model,
            flux_task_id=self.flux_task_id,
            api_base_url=lineage.built_api_base_url(self),
            result=self.flux_result,
            reattached=None if started else self.reattached,
            failure_message=failure_message,
        )

    def build_result(self, context: Context, info: TaskInfo) -> GenerationResult:
        """What was asked and made: copy the images to ``download_to``, describe them on the
        outlets' asset events, and forget the recorded task (clearing this task later
        generates anew)."""
        stored = self._store_images(info) if self.download_to is not None else None
        if stored is not None:
            FluxMetrics.of(context).stored(stored, ready_at=info.completed_at)
        flux_input = self.build_input()
        result = GenerationResult(task=info, request=flux_input.summary(), stored=stored)
        if self.reuse and stored:
            write_manifest(
                storage_path(self.download_to),  # type: ignore[arg-type]
                generation_key(self.model, flux_input),
                result,
                _made_by(context),
            )
        self._announce(context, result)
        store = state_store(context, self.log, reattach=self.reattach, warn=False)
        if store is not None:
            store.delete(STATE_KEY)
        return result

    def _announce(self, context: Context, result: GenerationResult) -> None:
        """Describe the result on the outlets' asset events."""
        extra: dict[str, Any] = {
            "flux_task_id": result.flux_task_id,
            "result_urls": result.result_urls,
            "credits": result.task.credits,
            "completed_at": result.task.completed_at,
            "duration_s": result.task.duration_s,
            "stored": result.locations,
        }
        if result.reused:
            extra["reused"] = True
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra.update(extra)

    def _reused(self, context: Context, flux_input: Flux2MaxInput) -> dict[str, Any] | None:
        """The stored result of an earlier identical generation, delivered; ``None`` if none."""
        key = generation_key(self.model, flux_input)
        with failing_the_task(self.log):
            folder = storage_path(self.download_to)  # type: ignore[arg-type]
        found = find_reusable(folder, key)
        if found is None:
            self.log.info("No stored generation to reuse for key %s: generating", key[:16])
            return None
        earlier, origin = found
        result = dataclasses.replace(earlier, request=flux_input.summary(), reused=True)
        self.log.info(
            "Reusing flux task %s (%s, key %s): %s, not calling the API",
            result.flux_task_id,
            origin,
            key[:16],
            count_text(len(result.locations), "stored image"),
        )
        self.flux_task_id = result.flux_task_id
        self.flux_result = result
        FluxMetrics.of(context).reused()
        self._announce(context, result)
        persist_result_link(context, result_link_target(result))
        return result.to_xcom()

    def _store_images(self, info: TaskInfo) -> list[StoredImage]:
        with failing_the_task(self.log):
            folder = storage_path(self.download_to)  # type: ignore[arg-type]
            stored = self.hook.download_results(
                info.result_urls, folder, info.flux_task_id, max_bytes=self.max_download_bytes
            )
        for image in stored:
            self.log.info(
                "Stored %s (%s, sha256 %s)", image.location, bytes_text(image.bytes), image.sha256
            )
        return stored


def _made_by(context: Context) -> dict[str, Any]:
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": ti.map_index,
    }
