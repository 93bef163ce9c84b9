"""The layers hold: above the API layer, code calls the API through the hook alone."""

from __future__ import annotations

import ast
from pathlib import Path

import flux_provider

PACKAGE = Path(flux_provider.__file__).parent
ABOVE_THE_API = ("operators", "sensors", "triggers", "links", "lineage", "plugins")


def _reaches_past_the_hook(tree: ast.AST) -> list[int]:
    """Lines with ``<something>.hook.client`` or ``hook.client``: the client behind the hook."""
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "client"
        and (
            (isinstance(node.value, ast.Attribute) and node.value.attr == "hook")
            or (isinstance(node.value, ast.Name) and node.value.id == "hook")
        )
    )


def test_nothing_above_the_api_layer_reaches_past_the_hook() -> None:
    found = {
        str(path.relative_to(PACKAGE)): lines
        for layer in ABOVE_THE_API
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        if (lines := _reaches_past_the_hook(ast.parse(path.read_text())))
    }
    assert found == {}


def test_the_check_sees_what_it_looks_for() -> None:
    code = "self.hook.client.get_task('x')\nhook.client.config\nself.hook.get_task('x')\n"
    assert _reaches_past_the_hook(ast.parse(code)) == [1, 2]


def test_the_sync_and_async_waits_share_one_signature() -> None:
    import inspect

    from flux_provider.api.client import AsyncFluxClient, FluxClient
    from flux_provider.hooks import FluxHook

    for sync, twin in (
        (FluxClient.wait_for_task, AsyncFluxClient.wait_for_task),
        (FluxClient.follow, AsyncFluxClient.follow),
        (FluxHook.wait_for_task, FluxHook.await_for_task),
        (FluxHook.follow_task, FluxHook.afollow_task),
    ):
        assert inspect.signature(sync) == inspect.signature(twin), (sync, twin)
