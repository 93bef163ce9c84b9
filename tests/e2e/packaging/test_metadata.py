"""Metadata that a package index and Airflow's Providers page show, read from one place each.

The version lives in ``flux_provider/__init__.py`` (the build reads it there), the project's
addresses in ``[project.urls]``; the README's links are absolute, so they work on the index page
as well as in the repository, and each link into the repository names a file that exists.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

import tomllib

from flux_provider import DISTRIBUTION, __version__, get_provider_info
from tests.conftest import REPO

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


def test_the_version_has_one_place() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "version" in _project()["dynamic"]
    assert 'path = "flux_provider/__init__.py"' in pyproject
    assert metadata.version(DISTRIBUTION) == __version__
    assert get_provider_info()["versions"] == [__version__]


def test_providers_page_links_the_documentation() -> None:
    assert get_provider_info()["documentation-url"] == _project()["urls"]["Documentation"]


def test_the_changelog_describes_this_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(__version__)} ", changelog, re.MULTILINE), changelog[:300]


def test_readme_links_are_absolute_and_resolve_in_the_repository() -> None:
    source = _project()["urls"]["Source"]
    owner_repo = source.removeprefix("https://github.com/")
    into_repo = (f"{source}/blob/main/", f"https://raw.githubusercontent.com/{owner_repo}/main/")
    links = LINK.findall((REPO / "README.md").read_text())
    assert len(links) > 5
    for target in links:
        assert target.startswith(("https://", "http://", "#")), f"relative link: {target}"
        for prefix in into_repo:
            if target.startswith(prefix):
                path = target.removeprefix(prefix).split("#", 1)[0]
                assert (REPO / path).exists(), f"{target}: no {path} in the repository"
