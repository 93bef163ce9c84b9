"""``FluxGenerateImageOperator``: validate, submit, wait (deferred by default), finish."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowFailException, conf
from airflow.sdk import BaseOperator, ObjectStoragePath

from flux_provider.client import DEFAULT_WAIT_TIMEOUT
from flux_provider.downloads import (
    DEFAULT_MAX_IMAGE_BYTES,
    ResultDownloader,
    private_hosts_allowed,
)
from flux_provider.errors import FluxError, InvalidInputError, NotFoundError
from flux_provider.hooks import FluxHook
from flux_provider.links import FluxResultLink, persist_result_link
from flux_provider.models import MODEL_NAME, Flux2MaxInput, TaskInfo, TaskState, validate_input
from flux_provider.outcomes import fail, result_from_event, result_from_info
from flux_provider.polling import DEFAULT_MAX_CONSECUTIVE_ERRORS, TaskWait
from flux_provider.triggers import FluxTaskTrigger

STATE_KEY = "flux_task_id"
"""Key of the task id in ``task_state_store`` and XCom; renaming it breaks in-flight retries."""


def check_wait_settings(poll_interval: float | None, timeout: float, max_errors: int) -> None:
    """Reject impossible wait settings when the DAG is parsed."""
    if poll_interval is not None and not poll_interval > 0:
        raise ValueError(
            f"poll_interval must be > 0 seconds (or None for adaptive), got {poll_interval}"
        )
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if max_errors < 0:
        raise ValueError(f"max_consecutive_errors must be >= 0, got {max_errors}")


class FluxWaitMixin:
    """Waiting for a submitted task: check once, then defer or poll; shared with the sensor."""

    flux_conn_id: str
    deferrable: bool
    poll_interval: float | None
    timeout: float
    max_consecutive_errors: int
    log: Any

    @cached_property
    def hook(self) -> FluxHook:
        """The hook for ``flux_conn_id``."""
        return FluxHook(flux_conn_id=self.flux_conn_id)

    def wait_and_finish(self, context: Any, flux_task_id: str, info: TaskInfo | None = None) -> Any:
        """Return the result if the task already ended; otherwise defer or block until it does."""
        if info is None:
            info = self._peek(flux_task_id)
        if info is not None and info.state.is_terminal:
            self.log.info(
                "Flux task %s has already ended (%s): not waiting", flux_task_id, info.raw_state
            )
            return self.finish(context, info)
        if self.deferrable:
            self.log.info("Deferring: polling flux task %s in the triggerer", flux_task_id)
            self.defer(  # type: ignore[attr-defined]
                trigger=FluxTaskTrigger(
                    flux_task_id,
                    self.flux_conn_id,
                    deadline=time.time() + self.timeout,
                    poll_interval=self.poll_interval,
                    max_consecutive_errors=self.max_consecutive_errors,
                ),
                method_name="execute_complete",
                timeout=None,
            )
        final = self._guarded(
            self.hook.client.wait_for_task,
            flux_task_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            on_poll=self._log_progress,
        )
        return self.finish(context, final)

    def _peek(self, flux_task_id: str) -> TaskInfo | None:
        """One poll without retries; ``None`` if it hit a transient error (the wait copes)."""
        try:
            info: TaskInfo = self.hook.client.get_task(flux_task_id, retry=False)
        except NotFoundError as error:
            self.log.info("Flux task %s is not visible yet (%s)", flux_task_id, error)
            return None
        except FluxError as error:
            if not error.retryable:
                fail(error, self.log)
            self.log.warning(
                "Checking flux task %s failed (%s); waiting anyway", flux_task_id, error
            )
            return None
        return info

    def _log_progress(self, wait: TaskWait, info: TaskInfo | None) -> None:
        if info is not None and not wait.state_changed:
            return
        self.log.info(
            "Flux task %s: %s after %.1fs (%d polls)",
            wait.flux_task_id,
            info.raw_state if info is not None else f"poll failed ({wait.last_error})",
            wait.elapsed,
            wait.polls,
        )

    def _guarded(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except FluxError as error:
            fail(error, self.log)

    def check_connection(self) -> None:
        """Build the client now: a misconfigured connection fails at once, without retries.

        Reading the connection also registers the key with the secrets masker
        in this process (a resumed task would otherwise never read it).
        """
        try:
            self.hook.client  # noqa: B018
        except ValueError as exc:
            self.log.error("Failing without retry (a retry cannot help): %s", exc)
            raise AirflowFailException(str(exc)) from None

    def execute_complete(self, context: Any, event: Mapping[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: validate the event, then finish."""
        self.check_connection()
        return self._finalise(context, result_from_event(event, self.log))

    def finish(self, context: Any, info: TaskInfo) -> Any:
        """Finish from a final task info (sync path and already-ended tasks)."""
        return self._finalise(context, result_from_info(info, self.log))

    def _finalise(self, context: Any, result: dict[str, Any]) -> dict[str, Any]:
        result = self.complete(context, result)
        persist_result_link(context, result_link_target(result))
        return result

    def complete(self, context: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Post-process the result dict of a successful task (downloads, asset events)."""
        return result


def result_link_target(result: Mapping[str, Any]) -> str | None:
    """The first stored copy when it is browsable over http(s), else the first result URL."""
    stored = [s["location"] for s in result.get("stored") or []]
    browsable = [loc for loc in stored if loc.startswith(("http://", "https://"))]
    urls = browsable or list(result.get("result_urls") or [])
    return urls[0] if urls else None


def storage_path(target: str | ObjectStoragePath) -> ObjectStoragePath:
    """A download target as an ``ObjectStoragePath``; a plain path means the local disk."""
    if isinstance(target, ObjectStoragePath):
        return target
    text = str(target).strip()
    if not text:
        raise InvalidInputError("download_to is empty")
    if "://" not in text:
        text = Path(text).expanduser().resolve().as_uri()
    return ObjectStoragePath(text)


class FluxGenerateImageOperator(FluxWaitMixin, BaseOperator):
    """Generate an image with FLUX.2 [max]: validate, submit, wait, return the result.

    The input is validated with :class:`~flux_provider.models.Flux2MaxInput`
    before any HTTP call. The submitted task id is pushed to XCom
    (``flux_task_id``) and saved in ``task_state_store`` the moment it exists,
    so a retry of this task instance re-attaches to a task that is still
    running or already succeeded instead of paying for a new one.

    :param prompt: the text prompt (templated).
    :param input_urls: reference image URLs for edits, up to 8 (templated).
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if model != MODEL_NAME:
            raise ValueError(f"model must be {MODEL_NAME!r}, got {model!r}")
        check_wait_settings(poll_interval, timeout, max_consecutive_errors)
        # Fields that are not templated can be checked now, when the DAG is parsed.
        static = {"aspect_ratio": aspect_ratio, "resolution": resolution, "seed": seed}
        try:
            validate_input({"prompt": "-", **{k: v for k, v in static.items() if v is not None}})
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None
        self.prompt = prompt
        self.input_urls = input_urls
        self.aspect_ratio = aspect_ratio
        self.resolution = resolution
        self.seed = seed
        self.extra_input = extra_input
        self.model = model
        self.callback_url = callback_url
        self.flux_conn_id = flux_conn_id
        self.deferrable = deferrable
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_consecutive_errors = max_consecutive_errors
        self.reattach = reattach
        if max_download_bytes <= 0:
            raise ValueError(f"max_download_bytes must be > 0, got {max_download_bytes}")
        self.download_to = download_to
        self.max_download_bytes = max_download_bytes

    def build_input(self) -> Flux2MaxInput:
        """The validated ``input`` object (after templates were rendered)."""
        if self.extra_input is not None and not isinstance(self.extra_input, Mapping):
            raise InvalidInputError(
                f"extra_input must be a mapping, got {type(self.extra_input).__name__}"
            )
        data: dict[str, Any] = dict(self.extra_input or {})
        named = {
            "prompt": self.prompt,
            "input_urls": self.input_urls,
            "aspect_ratio": self.aspect_ratio,
            "resolution": self.resolution,
            "seed": self.seed,
        }
        data.update({k: v for k, v in named.items() if v is not None})
        return validate_input(data)

    def execute(self, context: Any) -> Any:
        """Submit (or re-attach), then wait according to the operator's mode."""
        try:
            flux_input = self.build_input()
        except InvalidInputError as exc:
            fail(exc, self.log)
        self.check_connection()
        store = context.get("task_state_store") if self.reattach else None
        if self.reattach and store is None:
            self.log.warning("task_state_store is unavailable: a retry will submit a new task")
        previous = self._reusable_task(store)
        if previous is not None:
            flux_task_id, info = previous
            self._share_id(context, flux_task_id)
            if not self.wait_for_completion:
                state = info.state.value if info is not None else "unknown"
                return {"flux_task_id": flux_task_id, "state": state}
            return self.wait_and_finish(context, flux_task_id, info)
        flux_task_id = self._guarded(
            self.hook.create_task, flux_input, model=self.model, callback_url=self.callback_url
        )
        if store is not None:
            store.set(STATE_KEY, flux_task_id)
        self.log.info("Submitted flux task %s", flux_task_id)
        self._share_id(context, flux_task_id)
        if not self.wait_for_completion:
            return {"flux_task_id": flux_task_id, "state": "submitted"}
        return self.wait_and_finish(context, flux_task_id)

    def complete(self, context: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Copy the images to ``download_to`` and describe them on the outlets' asset events."""
        if self.download_to is not None:
            result["stored"] = self._download(result)
        extra = {
            "flux_task_id": result["flux_task_id"],
            "result_urls": result["result_urls"],
            "stored": [s["location"] for s in result.get("stored", [])],
        }
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra.update(extra)
        store = context.get("task_state_store") if self.reattach else None
        if store is not None:
            # Retries of this execution are over: clearing the task later must generate anew.
            store.delete(STATE_KEY)
        return result

    def _download(self, result: Mapping[str, Any]) -> list[dict[str, Any]]:
        downloader = ResultDownloader(
            max_bytes=self.max_download_bytes,
            # Result links may point inside the network only when the API itself lives there.
            allow_private_hosts=private_hosts_allowed(self.hook.client.config.base_url),
        )
        try:
            folder = storage_path(self.download_to)  # type: ignore[arg-type]
            stored = downloader.download_all(result["result_urls"], folder, result["flux_task_id"])
        except FluxError as error:
            fail(error, self.log)
        finally:
            downloader.close()
        for image in stored:
            self.log.info(
                "Stored %s (%d bytes, sha256 %s)", image.location, image.bytes, image.sha256
            )
        return [image.as_dict() for image in stored]

    def _share_id(self, context: Any, flux_task_id: str) -> None:
        context["ti"].xcom_push(key=STATE_KEY, value=flux_task_id)

    def _reusable_task(self, store: Any) -> tuple[str, TaskInfo | None] | None:
        """The earlier try's task if it may be reused, with its info when known.

        Reused when it is still running or succeeded, and also when its state
        cannot be read right now (a transient error): re-attaching costs
        nothing, while submitting again could pay twice. ``None`` means submit.
        """
        if store is None:
            return None
        flux_task_id = store.get(STATE_KEY)
        if not isinstance(flux_task_id, str):
            return None
        try:
            info: TaskInfo = self.hook.get_task(flux_task_id)
        except NotFoundError:
            self.log.warning("Previous flux task %s is unknown: submitting anew", flux_task_id)
            return None
        except FluxError as error:
            if not error.retryable:
                fail(error, self.log)
            self.log.warning(
                "Previous flux task %s cannot be checked (%s): re-attaching", flux_task_id, error
            )
            return flux_task_id, None
        if info.state is TaskState.FAIL:
            self.log.warning(
                "Previous flux task %s failed (%s): submitting anew", flux_task_id, info.fail_msg
            )
            return None
        if info.state is TaskState.SUCCESS:
            self.log.info(
                "Previous flux task %s succeeded: reusing it, not submitting", flux_task_id
            )
        else:
            self.log.info(
                "Re-attaching to previous flux task %s (%s): not submitting",
                flux_task_id,
                info.raw_state,
            )
        return flux_task_id, info
