"""Every public name of the design's contract imports from where the contract says it lives."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = [
    ("flux_provider", "get_provider_info"),
    ("flux_provider.hooks", "FluxHook"),
    ("flux_provider.operators", "FluxGenerateImageOperator"),
    ("flux_provider.operators", "FluxGenerateImageBatchOperator"),
    ("flux_provider.triggers", "FluxTaskTrigger"),
    ("flux_provider.triggers", "FluxBatchTrigger"),
    ("flux_provider.sensors", "FluxTaskSensor"),
    ("flux_provider.links", "FluxResultLink"),
    ("flux_provider.models", "Flux2MaxInput"),
    ("flux_provider.models", "TaskInfo"),
    ("flux_provider.models", "TaskState"),
    ("flux_provider.errors", "FluxError"),
    ("flux_provider.errors", "InvalidInputError"),
    ("flux_provider.testing", "FakeFluxServer"),
    ("flux_provider.decorators", "flux_image_task"),
    ("flux_provider.api", "FluxClient"),
    ("flux_provider.api", "AsyncFluxClient"),
    ("flux_provider.api", "ClientConfig"),
]
HOOK_METHODS = [
    "create_task",
    "get_task",
    "wait_for_task",
    "acreate_task",
    "aget_task",
    "test_connection",
    "get_balance",
    "aget_balance",
    "estimate_credits",
]


@pytest.mark.parametrize(("module", "name"), PUBLIC)
def test_the_public_name_imports(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_the_hook_has_the_contracts_methods_and_names() -> None:
    from flux_provider.hooks import FluxHook

    assert (FluxHook.conn_type, FluxHook.conn_name_attr) == ("flux", "flux_conn_id")
    assert (FluxHook.default_conn_name, FluxHook.hook_name) == ("flux_default", "Flux")
    assert all(callable(getattr(FluxHook, name)) for name in HOOK_METHODS)


def test_every_error_says_whether_a_retry_can_help() -> None:
    from flux_provider import errors

    classes = [getattr(errors, name) for name in errors.__all__]
    failures = [c for c in classes if isinstance(c, type) and issubclass(c, errors.FluxError)]
    assert len(failures) > 10
    assert all(isinstance(c.retryable, bool) for c in failures)
