"""``@task.flux_image`` and ``@task.flux_image_batch``: a Python function writes the request.

The decorated function runs on the worker when the task starts and returns what to generate:
``@task.flux_image`` a prompt or an input mapping (``prompt``, ``input_urls``, ``aspect_ratio``,
``resolution``, ``seed`` and extra fields), ``@task.flux_image_batch`` a list of either. The
decorator takes the operator's arguments (``download_to``, ``aspect_ratio``, ``deferrable``,
``retries``...); what the function returns wins over them. Everything else is the operator's:
the same validation, return value, re-attach on retry and deferral; ``.partial()`` and
``.expand()`` work as for any ``@task``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    DecoratedOperator,
    determine_kwargs,
    task_decorator_factory,
)

from flux_provider.api.errors import InvalidInputError
from flux_provider.operators import FluxGenerateImageBatchOperator, FluxGenerateImageOperator
from flux_provider.operators.failures import fail

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import TaskDecorator
    from airflow.sdk import Context

REQUEST_KEY = "flux_request"
"""XCom key of what the function returned: a deferred task resumes in a new process, where the
function's answer is read back instead of calling it a second time."""

_NAMED_FIELDS = ("prompt", "input_urls", "aspect_ratio", "resolution", "seed")


def _call(operator: Any, context: Context) -> Any:
    """Run the decorated function with its arguments and the context keys it asks for."""
    keywords = determine_kwargs(
        operator.python_callable, operator.op_args, {**context, **operator.op_kwargs}
    )
    return operator.python_callable(*operator.op_args, **keywords)


def request_fields(value: Any) -> dict[str, Any]:
    """What ``@task.flux_image``'s function returned, as the operator's fields: a prompt, or a
    mapping whose unknown keys become ``extra_input``."""
    if isinstance(value, str):
        return {"prompt": value}
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            "a @task.flux_image function returns a prompt or a mapping of input fields, "
            f"got {type(value).__name__}"
        )
    given = dict(value)
    if "img_urls" in given and "input_urls" not in given:
        given["input_urls"] = given.pop("img_urls")
    fields = {name: given.pop(name) for name in _NAMED_FIELDS if name in given}
    if given:
        fields["extra_input"] = given
    return fields


class _FluxImageDecoratedOperator(DecoratedOperator, FluxGenerateImageOperator):
    """``FluxGenerateImageOperator`` whose input comes from the decorated function."""

    custom_operator_name = "@task.flux_image"
    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *FluxGenerateImageOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **FluxGenerateImageOperator.template_fields_renderers,
    }

    def __init__(self, *, python_callable: Callable[..., Any], **kwargs: Any) -> None:
        kwargs.setdefault("prompt", "")  # the function gives it when the task runs
        super().__init__(python_callable=python_callable, **kwargs)

    def _take(self, fields: Mapping[str, Any]) -> None:
        extra = fields.get("extra_input")
        for name, value in fields.items():
            setattr(self, name, value)
        if extra is not None:
            self.extra_input = {**(self.extra_input or {}), **extra}

    def execute(self, context: Context) -> Any:
        """Call the function, then submit what it asked for (see the operator)."""
        try:
            fields = request_fields(_call(self, context))
        except InvalidInputError as error:
            fail(error, self.log)
        context["ti"].xcom_push(key=REQUEST_KEY, value=fields)
        self._take(fields)
        return DecoratedOperator.execute(self, context)

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Resume after the trigger with what the function returned before deferring."""
        ti = context["ti"]
        fields = ti.xcom_pull(task_ids=self.task_id, key=REQUEST_KEY, map_indexes=ti.map_index)
        if isinstance(fields, Mapping):
            self._take(fields)
        return FluxGenerateImageOperator.execute_complete(self, context, event)


class _FluxImageBatchDecoratedOperator(DecoratedOperator, FluxGenerateImageBatchOperator):
    """``FluxGenerateImageBatchOperator`` whose items come from the decorated function."""

    custom_operator_name = "@task.flux_image_batch"
    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *FluxGenerateImageBatchOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **FluxGenerateImageBatchOperator.template_fields_renderers,
    }

    def __init__(self, *, python_callable: Callable[..., Any], **kwargs: Any) -> None:
        kwargs.setdefault("prompts", [])  # the function gives the items when the task runs
        super().__init__(python_callable=python_callable, **kwargs)

    def execute(self, context: Context) -> Any:
        """Call the function, then run the batch of what it returned (see the operator)."""
        items = _call(self, context)
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
            fail(
                InvalidInputError(
                    "a @task.flux_image_batch function returns a list of prompts or input "
                    f"mappings, got {type(items).__name__}"
                ),
                self.log,
            )
        listed = list(items)
        texts = all(isinstance(item, str) for item in listed)
        self.prompts, self.inputs = (listed, None) if texts else (None, listed)
        return DecoratedOperator.execute(self, context)


def flux_image_task(
    python_callable: Callable[..., Any] | None = None, **kwargs: Any
) -> TaskDecorator:
    """``@task.flux_image``: the function returns the prompt or an input mapping; the decorator
    takes :class:`~flux_provider.operators.FluxGenerateImageOperator`'s arguments."""
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=False,
        decorated_operator_class=_FluxImageDecoratedOperator,
        **kwargs,
    )


def flux_image_batch_task(
    python_callable: Callable[..., Any] | None = None, **kwargs: Any
) -> TaskDecorator:
    """``@task.flux_image_batch``: the function returns a list of prompts or input mappings;
    the decorator takes :class:`~flux_provider.operators.FluxGenerateImageBatchOperator`'s
    arguments (``download_to`` among them)."""
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=False,
        decorated_operator_class=_FluxImageBatchDecoratedOperator,
        **kwargs,
    )
