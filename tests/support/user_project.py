"""A user's project laid out as the README's "Testing your own DAGs with the fake API" shows it.

The ``conftest.py`` and the test are the README's Python blocks, read from README.md verbatim,
so the tests that run them run what users copy. The DAG is the user's own: a small one here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from tests.support.fake import REPO

SECTION = "## Testing your own DAGs with the fake API"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)

MY_DAG = '''\
"""A user's DAG: one generation, its image copied to output/ beside the DAGs folder."""

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from flux_provider.operators import FluxGenerateImageOperator

with DAG("my_dag", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    FluxGenerateImageOperator(
        task_id="hero_image",
        prompt="A studio photo of a ceramic teapot on linen",
        download_to=str(Path(__file__).resolve().parents[1] / "output"),
    )
'''


def readme_section() -> str:
    """The README's section on testing your own DAGs, up to the next section."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    return readme[start : end if end != -1 else None]


def readme_snippets() -> tuple[str, str]:
    """The section's two Python blocks, verbatim: the ``conftest.py`` and the test module."""
    blocks = _PYTHON_BLOCK.findall(readme_section())
    assert len(blocks) == 2, f"expected a conftest block and a test block, found {len(blocks)}"
    (conftest,) = [block for block in blocks if "pytest_plugins" in block]
    (test,) = [block for block in blocks if "def test_" in block]
    return conftest, test


def write_project(root: Path, *, dags_folder: str = "dags", conftest: str | None = None) -> Path:
    """The README's layout under ``root``: ``conftest.py``, ``<dags_folder>/my_dag.py`` and
    ``tests/test_my_dag.py``; ``conftest`` replaces the README's ``conftest.py`` if given."""
    readme_conftest, readme_test = readme_snippets()
    (root / dags_folder).mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "conftest.py").write_text(conftest if conftest is not None else readme_conftest)
    (root / dags_folder / "my_dag.py").write_text(MY_DAG)
    (root / "tests" / "test_my_dag.py").write_text(readme_test)
    return root


def users_shell(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell with ``home`` as ``HOME``: none of this session's
    Airflow settings (``AIRFLOW_*``, the plugin's marker) and no ``PYTHONPATH``."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if not key.startswith(("AIRFLOW", "FLUX_")) and key not in ("PYTHONPATH", "HOME")
    }
    env["HOME"] = str(home)
    return env
