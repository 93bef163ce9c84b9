"""The fake API's command line with one more control command: ``tasks``.

``python -m benchmarks.fake_server`` takes the arguments of ``python -m flux_provider.testing``
and answers the same stdin commands, plus ``tasks``: every task the fake holds as one JSON
object, ``{task_id: [created_at, completed_at, status]}``, times as the fake's own
``time.time()`` floats (``completed_at`` is ``null`` while a task runs). The API itself only
gives whole seconds (``create_at``, ``complete_at``); B6 measures ready-to-stored from these.
"""

from __future__ import annotations

import json
import sys

from flux_provider.testing import FakeFluxServer, control
from flux_provider.testing.__main__ import main as serve

TASKS_COMMAND = "tasks"


def task_times(server: FakeFluxServer) -> str:
    """The ``tasks`` answer: created and completed wall times and the status of every task."""
    return json.dumps(
        {
            task_id: [task.created_at, task.completed_at, task.status]
            for task_id, task in server.tasks.items()
        }
    )


def main() -> int:
    """Serve the fake, answering ``tasks`` besides the usual control commands."""
    answer_usual = control.answer_command

    def answer(server: FakeFluxServer, line: str) -> str | None:
        if line.strip() == TASKS_COMMAND:
            return task_times(server)
        return answer_usual(server, line)

    # serve_commands looks answer_command up in its module at each command.
    control.answer_command = answer
    return serve()


if __name__ == "__main__":
    sys.exit(main())
