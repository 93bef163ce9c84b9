"""What the distributed scenarios share: batches, task-instance states, trigger ownership."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.distributed import DistributedAirflow
from devtools.sampling import Sampler
from flux_provider.testing import FakeFluxServer

TRIGGERERS = ("triggerer-1", "triggerer-2")
BATCH_TASK = "generate"


def start_batch(airflow: DistributedAirflow, dag_id: str, count: int, output: Path) -> str:
    """Trigger a run of a ``flux_batch_*`` DAG with ``count`` prompts; its run id."""
    return airflow.trigger_dag(dag_id, conf={"count": count, "output_dir": str(output)})


def generate_states(airflow: DistributedAirflow, dag_id: str, run_id: str) -> list[tuple[str, int]]:
    """(state, try number) of each mapped ``generate`` instance of the run, by map index.

    Read from PostgreSQL: a batch of hundreds is over the REST API's page size.
    """
    rows = airflow.postgres.query(
        "SELECT state, try_number FROM task_instance"
        " WHERE dag_id = %s AND run_id = %s AND task_id = %s AND map_index >= 0"
        " ORDER BY map_index",
        (dag_id, run_id, BATCH_TASK),
    )
    return [(str(state), int(tries)) for state, tries in rows]


def count_in(airflow: DistributedAirflow, dag_id: str, run_id: str, state: str) -> int:
    """How many of the run's ``generate`` instances are in ``state``."""
    return sum(1 for seen, _ in generate_states(airflow, dag_id, run_id) if seen == state)


def polls_of(fake: FakeFluxServer, flux_task_id: str, since: float = 0.0) -> int:
    """Task-info requests the fake received about ``flux_task_id`` after ``since``
    (``time.monotonic()``)."""
    return sum(
        1
        for request in fake.stats.requests
        if request.query.get("task_id") == flux_task_id and request.received_at > since
    )


@dataclass
class TriggerOwnership:
    """Which triggerer job held which FLUX trigger, sampled from the ``trigger`` table.

    Use :meth:`sampler` around the work.
    """

    airflow: DistributedAirflow
    owners: dict[int, set[int]] = field(default_factory=dict)
    """Trigger id -> every triggerer job id seen holding it."""
    peaks: Counter[int] = field(default_factory=Counter)
    """Triggerer job id -> the most FLUX trigger rows assigned to it at once (a row stays
    assigned a little while after its trigger fired, until the triggerer cleans it up)."""

    def sample(self) -> None:
        """Read the trigger table once."""
        held: Counter[int] = Counter()
        for row in self.airflow.trigger_rows().values():
            if not row.classpath.startswith("flux_provider.") or row.triggerer_id is None:
                continue
            self.owners.setdefault(row.id, set()).add(row.triggerer_id)
            held[row.triggerer_id] += 1
        for job_id, count in held.items():
            self.peaks[job_id] = max(self.peaks[job_id], count)

    def sampler(self, interval: float = 1.0) -> Sampler:
        """A :class:`Sampler` taking :meth:`sample` every ``interval`` seconds."""
        return Sampler(self.sample, interval)

    def moved(self) -> int:
        """Triggers seen held by more than one triggerer (adopted from one thought dead)."""
        return sum(1 for jobs in self.owners.values() if len(jobs) > 1)

    def holders(self) -> set[int]:
        """Every triggerer job that held a FLUX trigger."""
        return {job for jobs in self.owners.values() for job in jobs}


def triggerer_sessions(airflow: DistributedAirflow) -> dict[str, list[int]]:
    """Each triggerer component's session (its job process and its trigger runner)."""
    return {
        name: [session]
        for name in TRIGGERERS
        if (session := airflow.components[name].session) is not None
    }


def flux_task_ids(airflow: DistributedAirflow, dag_id: str, run_id: str) -> dict[int, str]:
    """Map index -> the flux task id each ``generate`` instance recorded in XCom."""
    rows = airflow.postgres.query(
        "SELECT map_index, value FROM xcom WHERE dag_id = %s AND run_id = %s"
        " AND task_id = %s AND key = 'flux_task_id' ORDER BY map_index",
        (dag_id, run_id, BATCH_TASK),
    )
    return {int(index): _text(value) for index, value in rows}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value).strip('"')
