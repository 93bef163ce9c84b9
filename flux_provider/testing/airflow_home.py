"""A throwaway ``AIRFLOW_HOME`` for a test session, prepared before anything imports Airflow.

Airflow reads ``AIRFLOW_HOME`` and its configuration once, when ``airflow`` is first imported
(``airflow/__init__.py`` imports ``airflow.configuration``, which resolves the home, and
``airflow.settings``, which binds the database). Under pytest that import happens while the
test modules are collected (a DAG module imports Airflow), before any fixture runs, so the home
must be in the environment by then: :func:`prepare` is called from the plugin's
``pytest_configure``. Nothing here imports Airflow, except :func:`airflow_in_use`, when called.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AIRFLOW_DEFAULT_HOME",
    "MARKER_VARIABLE",
    "USER_SETTINGS",
    "AirflowInUse",
    "PreparedHome",
    "airflow_in_use",
    "migrate",
    "prepare",
    "user_setting",
]

AIRFLOW_DEFAULT_HOME = Path("~/airflow").expanduser()
"""Where Airflow keeps its home when ``AIRFLOW_HOME`` is unset: a user's real one."""

MARKER_VARIABLE = "FLUX_TEST_AIRFLOW_HOME"
"""Set to a prepared home's path, so a pytest started under this one (a pytest-xdist worker,
a nested run) knows that ``AIRFLOW_HOME`` is a throwaway one and prepares its own."""

USER_SETTINGS = (
    "AIRFLOW_HOME",
    "AIRFLOW_CONFIG",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET",
)
"""Variables that show the user chose an Airflow home, configuration or database."""

_DATABASE_FILE = "airflow.db"
_MIGRATE_TIMEOUT = 600.0


def user_setting(env: Mapping[str, str]) -> str | None:
    """The first of :data:`USER_SETTINGS` the user has set in ``env``, or ``None``.

    ``AIRFLOW_HOME`` does not count when it names Airflow's default home (``~/airflow``, as
    Airflow's quick start exports it: that is a real home, never a test's) or a home this module
    prepared for an enclosing test session.
    """
    enclosing = _enclosing_home(env)
    for name in USER_SETTINGS:
        value = env.get(name)
        if not value:
            continue
        if enclosing is not None and value == _our_value(name, enclosing):
            continue
        if name == "AIRFLOW_HOME" and _resolved(value) == AIRFLOW_DEFAULT_HOME.resolve():
            continue
        return name
    return None


def _resolved(path: str) -> Path:
    return Path(os.path.expandvars(path)).expanduser().resolve()


def _enclosing_home(env: Mapping[str, str]) -> Path | None:
    """The home an enclosing session prepared, if ``AIRFLOW_HOME`` still names it."""
    marker, home = env.get(MARKER_VARIABLE), env.get("AIRFLOW_HOME")
    if marker and home and _resolved(marker) == _resolved(home):
        return Path(marker)
    return None


def _our_value(name: str, home: Path) -> str | None:
    """What :func:`prepare` sets ``name`` to for ``home``."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _database_url(home),
    }.get(name)


def _database_url(home: Path) -> str:
    return f"sqlite:///{home / _DATABASE_FILE}"


@dataclass
class PreparedHome:
    """A throwaway home this session set up, and the environment it replaced.

    Attributes:
        path: The home: ``airflow.cfg`` (written by Airflow), ``airflow.db``, ``logs``.
        dags_folder: The DAGs folder ``dag.test()`` parses, on ``sys.path`` while prepared.
        database_url: The SQLite database in :attr:`path`.
    """

    path: Path
    dags_folder: Path
    database_url: str
    replaced: Mapping[str, str | None] = field(default_factory=dict, repr=False)
    """Each variable it set, with its value before (``None``: it was unset)."""
    on_sys_path: bool = field(default=False, repr=False)
    """Whether it put :attr:`dags_folder` on ``sys.path``."""

    def restore(self, env: MutableMapping[str, str]) -> None:
        """Put back the variables it changed, take the DAGs folder off ``sys.path`` and delete
        the home."""
        for name, value in self.replaced.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        if self.on_sys_path and str(self.dags_folder) in sys.path:
            sys.path.remove(str(self.dags_folder))
        shutil.rmtree(self.path, ignore_errors=True)


def prepare(env: MutableMapping[str, str], dags_folder: Path) -> PreparedHome:
    """Create a throwaway home and point Airflow at it through ``env``.

    Sets ``AIRFLOW_HOME`` and a SQLite ``sql_alchemy_conn`` inside it, and, unless the user set
    them, ``load_examples = False`` (else ``dag.test()`` would parse Airflow's example DAGs) and
    ``dags_folder = dags_folder``. The DAGs folder goes on ``sys.path`` so tests can import the
    DAG files by module name (``from my_dag import dag``).
    """
    path = Path(tempfile.mkdtemp(prefix="flux-test-airflow-home-"))
    database_url = _database_url(path)
    changes = {
        "AIRFLOW_HOME": str(path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        MARKER_VARIABLE: str(path),
    }
    if not env.get("AIRFLOW__CORE__LOAD_EXAMPLES"):
        changes["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    if env.get("AIRFLOW__CORE__DAGS_FOLDER"):
        dags_folder = Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).expanduser()
    else:
        changes["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    replaced = {name: env.get(name) for name in changes}
    env.update(changes)
    on_sys_path = str(dags_folder) not in sys.path
    if on_sys_path:
        sys.path.insert(0, str(dags_folder))
    return PreparedHome(path, dags_folder, database_url, replaced, on_sys_path)


@dataclass(frozen=True)
class AirflowInUse:
    """The home and database the imported Airflow uses."""

    home: Path
    database_url: str

    @property
    def is_default_home_database(self) -> bool:
        """Whether the database is the SQLite file of Airflow's default home (``~/airflow``)."""
        default = AIRFLOW_DEFAULT_HOME / _DATABASE_FILE
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            return False
        return Path(self.database_url.removeprefix(prefix)).expanduser().resolve() == (
            default.resolve()
        )


def airflow_in_use() -> AirflowInUse:
    """The home and database of Airflow in this process (imports Airflow if not yet done)."""
    from airflow import configuration, settings

    return AirflowInUse(Path(configuration.AIRFLOW_HOME), str(settings.SQL_ALCHEMY_CONN))


def migrate(airflow: AirflowInUse, env: Mapping[str, str]) -> float:
    """Run ``airflow db migrate`` on ``airflow``'s database; the seconds it took.

    It runs in a child process (as users run it), given this process's home and database
    explicitly so it migrates the very database ``dag.test()`` here will use.

    Raises:
        RuntimeError: If the command fails, with the end of its output.
    """
    child_env = {
        **env,
        "AIRFLOW_HOME": str(airflow.home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow.database_url,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=_MIGRATE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"airflow db migrate exited {done.returncode}:\n{output}")
    return time.monotonic() - started
