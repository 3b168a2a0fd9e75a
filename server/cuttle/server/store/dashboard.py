"""The dashboard's cells: per project, environment and tenant, the latest and last good deployment.

Each cell copies what the dashboard prints of two rows of `deployments`; it is written when a
deployment is recorded and when its state changes, in the same transaction, and the dashboard
reads a space's cells as one primary-key range of this table, so its cost is the number of
cells, never the length of the history (models.DashboardCell says why a copy and not a join).
Only the task's live state ("waiting for a person") and warnings are looked up, per cell by
primary key.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cuttle.server.domain.dashboard import DashboardCell as Cell
from cuttle.server.domain.dashboard import cell_state
from cuttle.server.domain.task_states import TaskState
from cuttle.server.store.models import DashboardCell, Deployment, Release, Task

_SUCCESS = TaskState.SUCCESS.value
_KEY = ("space_id", "project_id", "environment_id", "tenant_key")


def note_deployment(session: Session, row: Deployment, *, space_id: str, project_id: str) -> None:
    """Make a just-recorded deployment its cell's latest (and last good one if it succeeded)."""
    version = session.scalar(select(Release.version).where(Release.id == row.release_id))
    latest: dict[str, Any] = {
        "latest_deployment_id": row.id,
        "release_version": version,
        "state": row.state,
        "task_id": row.task_id,
        "deployed_ms": row.created_ms,
        "finished_ms": row.finished_ms,
    }
    good: dict[str, Any] = {}
    if row.state == _SUCCESS:
        good = {
            "last_success_deployment_id": row.id,
            "last_success_version": version,
            "last_success_ms": row.finished_ms,
        }
    values = {
        "space_id": space_id,
        "project_id": project_id,
        "environment_id": row.environment_id,
        "tenant_key": row.tenant_id or "",
        **latest,
        **good,
    }
    # An upsert: two first deployments to one cell, on two nodes at once, must not collide.
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DashboardCell).values(values)
    session.execute(statement.on_conflict_do_update(index_elements=_KEY, set_={**latest, **good}))


def note_state(session: Session, row: Deployment) -> None:
    """Copy a deployment's new state into its cell (the last good one too, on success)."""
    owner = session.execute(
        select(Release.space_id, Release.project_id, Release.version).where(
            Release.id == row.release_id
        )
    ).one()
    key = (
        DashboardCell.space_id == owner.space_id,
        DashboardCell.project_id == owner.project_id,
        DashboardCell.environment_id == row.environment_id,
        DashboardCell.tenant_key == (row.tenant_id or ""),
    )
    session.execute(
        update(DashboardCell)
        .where(*key, DashboardCell.latest_deployment_id == row.id)
        .values(state=row.state, finished_ms=row.finished_ms)
        .execution_options(synchronize_session=False)
    )
    if row.state == _SUCCESS:
        session.execute(
            update(DashboardCell)
            .where(*key)
            .values(
                last_success_deployment_id=row.id,
                last_success_version=owner.version,
                last_success_ms=row.finished_ms,
            )
            .execution_options(synchronize_session=False)
        )


def shows_release(session: Session, space_id: str, project_id: str, release_id: str) -> bool:
    """Whether any cell of the project shows a deployment of this release."""
    of_release = select(Deployment.id).where(Deployment.release_id == release_id)
    found = session.scalar(
        select(DashboardCell.environment_id)
        .where(
            DashboardCell.space_id == space_id,
            DashboardCell.project_id == project_id,
            or_(
                DashboardCell.latest_deployment_id.in_(of_release),
                DashboardCell.last_success_deployment_id.in_(of_release),
            ),
        )
        .limit(1)
    )
    return found is not None


def rebuild_project(session: Session, space_id: str, project_id: str) -> None:
    """Recompute a project's cells from its history (after releases were deleted or loaded)."""
    session.execute(
        delete(DashboardCell).where(
            DashboardCell.space_id == space_id, DashboardCell.project_id == project_id
        )
    )
    rows = session.execute(
        select(
            Deployment.environment_id,
            Deployment.tenant_id,
            Deployment.id,
            Deployment.state,
            Deployment.task_id,
            Deployment.created_ms,
            Deployment.finished_ms,
            Release.version,
        )
        .join(Release, Release.id == Deployment.release_id)
        .where(Release.project_id == project_id)
        .order_by(Deployment.created_ms, Deployment.id)
    ).all()
    # In creation order, as note_deployment saw them: the last one seen is the latest.
    cells: dict[tuple[str, str], DashboardCell] = {}
    for (
        environment_id,
        tenant_id,
        deployment_id,
        state,
        task_id,
        created,
        finished,
        version,
    ) in rows:
        key = (environment_id, tenant_id or "")
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = DashboardCell(
                space_id=space_id,
                project_id=project_id,
                environment_id=environment_id,
                tenant_key=tenant_id or "",
            )
        cell.latest_deployment_id = deployment_id
        cell.release_version = version
        cell.state = state
        cell.task_id = task_id
        cell.deployed_ms = created
        cell.finished_ms = finished
        if state == _SUCCESS:
            cell.last_success_deployment_id = deployment_id
            cell.last_success_version = version
            cell.last_success_ms = finished
    session.add_all(cells.values())
    session.flush()


def _cells_statement() -> Select[Any]:
    cell = DashboardCell.__table__
    task = Task.__table__
    # Scalar subqueries, not a join: each is one primary-key lookup per cell, where a join to
    # `tasks` (the whole history of every task) may be planned as a scan of it.
    task_state = (
        select(task.c.state).where(task.c.id == cell.c.task_id).scalar_subquery().label("ts")
    )
    warnings = (
        select(task.c.has_warnings).where(task.c.id == cell.c.task_id).scalar_subquery()
    ).label("warnings")
    return (
        select(
            cell.c.project_id,
            cell.c.environment_id,
            cell.c.tenant_key,
            cell.c.release_version,
            cell.c.state,
            task_state,
            warnings,
            cell.c.task_id,
            cell.c.deployed_ms,
            cell.c.finished_ms,
            cell.c.last_success_version,
            cell.c.last_success_ms,
        )
        .where(cell.c.space_id == bindparam("space_id"))
        .order_by(cell.c.project_id, cell.c.environment_id, cell.c.tenant_key)
    )


# Built once: the dashboard is polled (--watch), and building and cache-keying an ORM
# statement cost more than running it (a prebuilt Core statement, DESIGN §7).
_CELLS = _cells_statement()


def cells(session: Session, space_id: str) -> list[Cell]:
    """Every cell of a space with its latest deployment and, when that failed, the last good."""
    rows = session.connection().execute(_CELLS, {"space_id": space_id}).all()
    result: list[Cell] = []
    # Plain tuples: named access on each of thousands of rows cost as much as the query.
    for (
        project_id,
        environment_id,
        tenant_key,
        version,
        deployment_state,
        task_state,
        has_warnings,
        task_id,
        deployed_ms,
        finished_ms,
        good_version,
        good_ms,
    ) in rows:
        state = cell_state(deployment_state, task_state)
        # The last good release matters only beside a latest one that is not good.
        show_good = state != TaskState.SUCCESS and good_version is not None
        result.append(
            Cell(
                project_id=project_id,
                environment_id=environment_id,
                tenant_id=tenant_key or None,
                release_version=version,
                state=state,
                has_warnings=bool(has_warnings),
                task_id=task_id,
                created_ms=deployed_ms,
                finished_ms=finished_ms,
                last_success_version=good_version if show_good else None,
                last_success_ms=good_ms if show_good else None,
            )
        )
    return result
