"""The dashboard's cells: per project, environment and tenant, the latest and last good deployment.

Each cell points at two rows of `deployments`; it is written when a deployment is recorded and
when one succeeds, in the same transaction, and the dashboard reads every cell of a space in one
query on the cells' primary key joined by primary keys, so its cost is the number of cells,
never the length of the history (migration 0012 says why a table and not an index).
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from cuttle.server.domain.dashboard import DashboardCell as Cell
from cuttle.server.domain.dashboard import cell_state
from cuttle.server.domain.task_states import TaskState
from cuttle.server.store.models import DashboardCell, Deployment, Release, Task

_SUCCESS = TaskState.SUCCESS.value


def note_deployment(
    session: Session,
    *,
    space_id: str,
    project_id: str,
    environment_id: str,
    tenant_id: str | None,
    deployment_id: str,
    state: str,
) -> None:
    """Make a just-recorded deployment its cell's latest (and last good one if it succeeded)."""
    values = {
        "space_id": space_id,
        "project_id": project_id,
        "environment_id": environment_id,
        "tenant_key": tenant_id or "",
        "latest_deployment_id": deployment_id,
        "last_success_deployment_id": deployment_id if state == _SUCCESS else None,
    }
    changes: dict[str, object] = {"latest_deployment_id": deployment_id}
    if state == _SUCCESS:
        changes["last_success_deployment_id"] = deployment_id
    # An upsert: two first deployments to one cell, on two nodes at once, must not collide.
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DashboardCell).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["space_id", "project_id", "environment_id", "tenant_key"],
            set_=changes,
        )
    )


def note_success(session: Session, deployment_id: str) -> None:
    """Make a deployment that just succeeded its cell's last good one."""
    row = session.execute(
        select(
            Release.space_id, Release.project_id, Deployment.environment_id, Deployment.tenant_id
        )
        .join(Release, Release.id == Deployment.release_id)
        .where(Deployment.id == deployment_id)
    ).one()
    cell = session.get(
        DashboardCell, (row.space_id, row.project_id, row.environment_id, row.tenant_id or "")
    )
    if cell is not None:
        cell.last_success_deployment_id = deployment_id
        session.flush()


def rebuild_project(session: Session, space_id: str, project_id: str) -> None:
    """Recompute a project's cells from its history (after releases were deleted or loaded)."""
    session.execute(
        delete(DashboardCell).where(
            DashboardCell.space_id == space_id, DashboardCell.project_id == project_id
        )
    )
    rows = session.execute(
        select(Deployment.environment_id, Deployment.tenant_id, Deployment.id, Deployment.state)
        .join(Release, Release.id == Deployment.release_id)
        .where(Release.project_id == project_id)
        .order_by(Deployment.created_ms, Deployment.id)
    ).all()
    # In creation order, as note_deployment saw them: the last one seen is the latest.
    cells: dict[tuple[str, str], DashboardCell] = {}
    for environment_id, tenant_id, deployment_id, state in rows:
        key = (environment_id, tenant_id or "")
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = DashboardCell(
                space_id=space_id,
                project_id=project_id,
                environment_id=environment_id,
                tenant_key=tenant_id or "",
                last_success_deployment_id=None,
            )
        cell.latest_deployment_id = deployment_id
        if state == _SUCCESS:
            cell.last_success_deployment_id = deployment_id
    session.add_all(cells.values())
    session.flush()


def cells(session: Session, space_id: str) -> list[Cell]:
    """Every cell of a space with its latest deployment and, when that failed, the last good."""
    latest = aliased(Deployment)
    good = aliased(Deployment)
    good_release = aliased(Release)
    query = (
        select(
            DashboardCell.project_id,
            DashboardCell.environment_id,
            latest.tenant_id,
            latest.state,
            latest.task_id,
            latest.created_ms,
            latest.finished_ms,
            Release.version,
            Task.state.label("task_state"),
            Task.has_warnings,
            good.id.label("good_id"),
            good.finished_ms.label("good_ms"),
            good_release.version.label("good_version"),
        )
        .join(latest, latest.id == DashboardCell.latest_deployment_id)
        .join(Release, Release.id == latest.release_id)
        .outerjoin(Task, Task.id == latest.task_id)
        .outerjoin(good, good.id == DashboardCell.last_success_deployment_id)
        .outerjoin(good_release, good_release.id == good.release_id)
        .where(DashboardCell.space_id == space_id)
        .order_by(DashboardCell.project_id, DashboardCell.environment_id, DashboardCell.tenant_key)
    )
    result: list[Cell] = []
    for row in session.execute(query):
        state = cell_state(row.state, row.task_state)
        # The last good release matters only beside a latest one that is not good.
        show_good = state != TaskState.SUCCESS and row.good_id is not None
        result.append(
            Cell(
                project_id=row.project_id,
                environment_id=row.environment_id,
                tenant_id=row.tenant_id,
                release_version=row.version,
                state=state,
                has_warnings=bool(row.has_warnings),
                task_id=row.task_id,
                created_ms=row.created_ms,
                finished_ms=row.finished_ms,
                last_success_version=row.good_version if show_good else None,
                last_success_ms=row.good_ms if show_good else None,
            )
        )
    return result
