"""The repository's habits: pre-commit runs what ``make lint`` and ``make typecheck`` run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]


def test_pre_commit_runs_the_make_targets() -> None:
    config: dict[str, Any] = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert {hook["entry"] for hook in hooks} == {"make lint", "make typecheck"}
    makefile = (REPO / "Makefile").read_text()
    for target in ("lint", "typecheck"):
        assert f"\n{target}: " in makefile
