"""The package as users get it: the sdist and wheel built, checked, installed into a fresh venv.

``python -m build`` makes the sdist and then the wheel *from the sdist* (so the sdist is complete
enough to build from), ``twine check --strict`` reads both as a package index would, and the
wheel (not an editable install) goes into a new virtual environment with the pinned
dependencies of ``constraints.txt``. In there, with a private ``AIRFLOW_HOME``: Airflow's
provider discovery finds the provider, the fake API's command line serves, ``py.typed`` is
installed, the README's DAG test runs verbatim under pytest against the fake (with the
plugin's throwaway ``AIRFLOW_HOME``, no migration by hand), and none of this repository's own
harness (``devtools``, the Airflow launchers) is in the wheel.
"""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
import tomllib

from flux_provider import __version__
from tests.conftest import REPO
from tests.support.user_project import users_shell, write_project

pytestmark = pytest.mark.timeout(900)

DISTRIBUTION = "airflow_provider_flux"
HARNESS_MODULES = {path.stem for path in (REPO / "devtools").glob("*.py")} - {"__init__"}
"""This repository's own Airflow launchers, servers and samplers: never in the wheel."""


def _run(
    args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> str:
    """Run a command; its output (stdout and stderr), failing the test with it on non-zero."""
    done = subprocess.run(
        args,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output[-4000:]}"
    return output


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dist/`` as ``make dist`` writes it: one sdist and one wheel of this checkout."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], cwd=REPO)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (built,) = dist.glob(f"{DISTRIBUTION}-{__version__}-py3-none-any.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A new venv holding the built wheel and the pinned dependencies; its ``bin`` folder."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=REPO)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "install", "--upgrade", "pip>=24"], cwd=REPO)
    _run([*pip, "install", "-c", str(REPO / "constraints.txt"), str(wheel)], cwd=REPO, timeout=900)
    return venv / "bin"


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell: no trace of this test session's Airflow settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.pop("PYTHONPATH", None)
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    return env


def test_twine_accepts_both_files(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert sorted(path.suffix for path in files) == [".gz", ".whl"], files
    output = _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)], cwd=REPO)
    assert output.count("PASSED") == 2, output


def test_the_wheel_carries_the_package_and_its_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"{DISTRIBUTION}-{__version__}.dist-info"
        meta = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "flux_provider/py.typed" in names
    assert "flux_provider/testing/__main__.py" in names
    assert f"{info}/licenses/LICENSE" in names
    assert not [name for name in names if name.startswith(("tests/", "example_dags/", "devtools/"))]
    shipped = {Path(name).stem for name in names if name.startswith("flux_provider/testing/")}
    assert not shipped & HARNESS_MODULES, sorted(shipped & HARNESS_MODULES)
    assert "provider_info = flux_provider.get_provider_info:get_provider_info" in entry_points
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["Name"] == project["name"]
    assert meta["Version"] == __version__
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL") or [])
    assert urls == project["urls"]
    assert meta["License-Expression"] == "Apache-2.0"
    # The package index page shows the README: its links must not be relative to a checkout.
    readme = meta.get_payload()
    assert isinstance(readme, str)
    assert readme.startswith("# airflow-provider-flux")


def test_airflow_lists_the_installed_provider(
    fresh_venv: Path, airflow_env: dict[str, str]
) -> None:
    listed = _run(
        [str(fresh_venv / "airflow"), "providers", "list", "--output", "json"],
        cwd=REPO.parent,
        env=airflow_env,
        timeout=300,
    )
    providers = json.loads(listed[listed.index("[") :])
    [ours] = [p for p in providers if p["package_name"] == "airflow-provider-flux"]
    assert ours["version"] == __version__
    # Not the checkout: the installed copy, with its type marker.
    where = _run(
        [
            str(fresh_venv / "python"),
            "-c",
            "import flux_provider, pathlib; print(pathlib.Path(flux_provider.__file__).parent)",
        ],
        cwd=REPO.parent,
        env=airflow_env,
    ).strip()
    package = Path(where)
    assert package.is_relative_to(fresh_venv.parent), package
    assert (package / "py.typed").is_file()


def test_the_fake_api_command_line_serves(fresh_venv: Path, airflow_env: dict[str, str]) -> None:
    fake = subprocess.Popen(
        [str(fresh_venv / "python"), "-m", "flux_provider.testing", "--api-key", "k"],
        cwd=REPO.parent,
        env=airflow_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        ready = fake.stdout.readline()
        assert ready.startswith("FLUX fake API listening on http://127.0.0.1:"), ready
        base_url = ready.split()[-1]
        answer = httpx.get(
            f"{base_url}/api/v1/client/account/balance", headers={"x-api-key": "k"}, timeout=10
        )
        assert answer.status_code == 200
        assert answer.json()["data"]["balance"] > 0
    finally:
        fake.terminate()
        assert fake.wait(timeout=30) == 0


def test_the_readme_dag_test_runs_as_shown(
    fresh_venv: Path, airflow_env: dict[str, str], tmp_path: Path
) -> None:
    """The README's conftest and test, verbatim, in a user's project: ``pytest`` passes with
    no ``airflow db migrate`` run by hand and no ``AIRFLOW_HOME`` set, and ``~/airflow`` stays
    untouched."""
    _run(
        [
            str(fresh_venv / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-c",
            str(REPO / "constraints.txt"),
            "pytest",
        ],
        cwd=REPO,
    )
    project = write_project(tmp_path / "project")
    home = tmp_path / "user-home"
    home.mkdir()
    env = users_shell(home, airflow_env)

    output = _run(
        [str(fresh_venv / "python"), "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        timeout=600,
    )

    assert "1 passed" in output, output[-3000:]
    (image,) = (project / "output").iterdir()
    assert image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not (home / "airflow").exists()
