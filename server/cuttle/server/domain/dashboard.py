"""What a dashboard cell says: the state of a project's latest deployment to an environment."""

from __future__ import annotations

from dataclasses import dataclass

from cuttle.server.domain.task_states import TaskState


def cell_state(deployment_state: str, task_state: str | None) -> TaskState:
    """The task's state when it has one (it alone knows "waiting for a person"), else the row's."""
    # The deployment row follows the task only at start and end; in between the task may wait
    # for a person or be cancelling, and that is what someone looking at the dashboard needs.
    if task_state:
        return TaskState(task_state)
    return TaskState(deployment_state)


@dataclass(frozen=True, slots=True)
class DashboardCell:
    """One project × environment (× tenant) cell: its latest deployment and last good release."""

    project_id: str
    environment_id: str
    tenant_id: str | None
    release_version: str
    state: TaskState
    has_warnings: bool
    task_id: str | None
    created_ms: int
    finished_ms: int | None
    # Set only when the latest deployment did not succeed and an earlier one did.
    last_success_version: str | None
    last_success_ms: int | None
