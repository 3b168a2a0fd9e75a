"""The dashboard's cells: per project, environment and tenant, the latest and last good deployment.

Each cell points at two rows of `deployments`; it is written when a deployment is recorded and
when one succeeds, in the same transaction, and the dashboard reads every cell of a space in one
query on the cells' primary key joined by primary keys, so its cost is the number of cells,
never the length of the history (migration 0012 says why a table and not an index).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

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


def _cells_statement() -> Select[Any]:
    cell = DashboardCell.__table__
    latest = Deployment.__table__.alias("latest")
    release = Release.__table__.alias("release")
    task = Task.__table__.alias("task")
    good = Deployment.__table__.alias("good")
    good_release = Release.__table__.alias("good_release")
    return (
        select(
            cell.c.project_id,
            cell.c.environment_id,
            latest.c.tenant_id,
            latest.c.state,
            latest.c.task_id,
            latest.c.created_ms,
            latest.c.finished_ms,
            release.c.version,
            task.c.state.label("task_state"),
            task.c.has_warnings,
            good.c.id.label("good_id"),
            good.c.finished_ms.label("good_ms"),
            good_release.c.version.label("good_version"),
        )
        .select_from(cell)
        .join(latest, latest.c.id == cell.c.latest_deployment_id)
        .join(release, release.c.id == latest.c.release_id)
        .outerjoin(task, task.c.id == latest.c.task_id)
        .outerjoin(good, good.c.id == cell.c.last_success_deployment_id)
        .outerjoin(good_release, good_release.c.id == good.c.release_id)
        .where(cell.c.space_id == bindparam("space_id"))
        .order_by(cell.c.project_id, cell.c.environment_id, cell.c.tenant_key)
    )


# Built once: the dashboard is polled (--watch), and building and keying an ORM statement
# with six joins cost more than running it (a prebuilt Core statement, DESIGN §7).
_CELLS = _cells_statement()


def cells(session: Session, space_id: str) -> list[Cell]:
    """Every cell of a space with its latest deployment and, when that failed, the last good."""
    rows = session.connection().execute(_CELLS, {"space_id": space_id}).all()
    result: list[Cell] = []
    # Plain tuples: named access on each of thousands of rows cost as much as the query.
    for (
        project_id,
        environment_id,
        tenant_id,
        deployment_state,
        task_id,
        created_ms,
        finished_ms,
        version,
        task_state,
        has_warnings,
        good_id,
        good_ms,
        good_version,
    ) in rows:
        state = cell_state(deployment_state, task_state)
        # The last good release matters only beside a latest one that is not good.
        show_good = state != TaskState.SUCCESS and good_id is not None
        result.append(
            Cell(
                project_id=project_id,
                environment_id=environment_id,
                tenant_id=tenant_id,
                release_version=version,
                state=state,
                has_warnings=bool(has_warnings),
                task_id=task_id,
                created_ms=created_ms,
                finished_ms=finished_ms,
                last_success_version=good_version if show_good else None,
                last_success_ms=good_ms if show_good else None,
            )
        )
    return result
