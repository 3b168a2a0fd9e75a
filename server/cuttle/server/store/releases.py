"""Releases (immutable snapshots under a version) and the deployments made of them."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from cuttle.server.domain.task_states import FINISHED_TASK_STATES
from cuttle.server.store import dashboard
from cuttle.server.store.errors import Conflict, NotFound
from cuttle.server.store.models import Deployment, Release, Task
from cuttle.server.store.paging import check_page_size, newest_first, next_token
from cuttle.server.store.records import Page, now_ms

MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """A stored release; the snapshot holds ids and ciphertexts, as documents do."""

    id: str
    space_id: str
    project_id: str
    channel: str
    version: str
    notes: str
    snapshot: dict[str, Any]
    created_ms: int
    created_by: str
    variables_snapshot_ms: int


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """A release deployed to an environment (and tenant)."""

    id: str
    release_id: str
    environment_id: str
    tenant_id: str | None
    task_id: str | None
    state: str
    created_ms: int
    finished_ms: int | None


def _record(row: Release, with_snapshot: bool = True) -> ReleaseRecord:
    return ReleaseRecord(
        id=row.id,
        space_id=row.space_id,
        project_id=row.project_id,
        channel=row.channel,
        version=row.version,
        notes=row.notes,
        snapshot=dict(row.snapshot) if with_snapshot else {},
        created_ms=row.created_ms,
        created_by=row.created_by,
        variables_snapshot_ms=row.variables_snapshot_ms,
    )


def create(
    session: Session,
    *,
    space_id: str,
    project_id: str,
    channel: str,
    version: str,
    version_key: str,
    notes: str,
    snapshot: dict[str, Any],
    created_by: str,
) -> ReleaseRecord:
    """Store a release; Conflict when the project already has this version."""
    existing = session.scalar(
        select(Release.version).where(
            Release.project_id == project_id, Release.version_key == version_key
        )
    )
    if existing is not None:
        raise Conflict(f"release {existing} already exists in this project")
    now = now_ms()
    row = Release(
        id=uuid.uuid4().hex,
        space_id=space_id,
        project_id=project_id,
        channel=channel,
        version=version,
        version_key=version_key,
        notes=notes,
        snapshot=snapshot,
        created_ms=now,
        created_by=created_by,
        variables_snapshot_ms=now,
    )
    session.add(row)
    session.flush()
    return _record(row)


def get(session: Session, project_id: str, version_key: str) -> ReleaseRecord:
    """The project's release with this (normalized) version, or NotFound."""
    row = session.scalars(
        select(Release).where(Release.project_id == project_id, Release.version_key == version_key)
    ).first()
    if row is None:
        raise NotFound("release", version_key)
    return _record(row)


def versions(session: Session, project_id: str) -> list[tuple[str, str]]:
    """(channel, version) of every release of a project, for the next auto-increment."""
    # Only auto-numbering needs them all (a mask looks for its base among every version).
    rows = session.execute(
        select(Release.channel, Release.version).where(Release.project_id == project_id)
    ).all()
    return [(channel, version) for channel, version in rows]


def list_page(
    session: Session,
    project_id: str,
    *,
    channels: Collection[str] = (),
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[ReleaseRecord]:
    """A project's releases (of any of these channels, spelled as stored), newest first.

    Paged on the (created, id) index; no snapshots.
    """
    check_page_size(page_size, MAX_PAGE_SIZE)
    # Snapshots are the bulk of a row and a listing shows none of them.
    query = (
        select(Release)
        .options(defer(Release.snapshot, raiseload=True))
        .where(Release.project_id == project_id)
    )
    if channels:
        query = query.where(Release.channel.in_(list(channels)))
    query = newest_first(query, Release.created_ms, Release.id, page_token, page_size)
    rows = session.scalars(query).all()
    items = tuple(_record(r, with_snapshot=False) for r in rows[:page_size])
    more = len(rows) > page_size
    token = next_token(items[-1].created_ms, items[-1].id, more) if items else None
    return Page(items=items, next_page_token=token)


def replace_variables(session: Session, release_id: str, snapshot: dict[str, Any]) -> ReleaseRecord:
    """Take a new variable snapshot (the explicit "update variables" of a release)."""
    row = session.get(Release, release_id, with_for_update=True)
    if row is None:
        raise NotFound("release", release_id)
    row.snapshot = snapshot
    row.variables_snapshot_ms = now_ms()
    session.flush()
    return _record(row)


def delete(session: Session, release_id: str) -> int:
    """Delete a release, its deployment history and their finished tasks (with their logs).

    Returns how many tasks went. A task still running keeps its row: it ends on its own.
    """
    row = session.get(Release, release_id)
    if row is None:
        raise NotFound("release", release_id)
    space_id, project_id = row.space_id, row.project_id
    # Retention deletes old releases, which cells rarely show: rebuild only when one does.
    shown = dashboard.shows_release(session, space_id, project_id, release_id)
    task_ids = select(Deployment.task_id).where(
        Deployment.release_id == release_id, Deployment.task_id.is_not(None)
    )
    # Nodes, runs, log chunks, interruptions and artifacts go with their task (ON DELETE CASCADE).
    removed = session.execute(
        sql_delete(Task)
        .where(Task.id.in_(task_ids), Task.state.in_([s.value for s in FINISHED_TASK_STATES]))
        .execution_options(synchronize_session=False)
    )
    session.delete(row)
    session.flush()
    if shown:
        dashboard.rebuild_project(session, space_id, project_id)
    return int(getattr(removed, "rowcount", 0) or 0)


@dataclass(frozen=True)
class RetentionRow:
    """A release with what retention weighs: its channel, age and deployments."""

    release_id: str
    version: str
    channel: str
    created_ms: int
    deployments: tuple[tuple[str, str, int], ...]  # (environment id, state, created)


def retention_rows(session: Session, project_id: str) -> list[RetentionRow]:
    """Every release of a project with its deployments, in two queries (no snapshots)."""
    releases = session.execute(
        select(Release.id, Release.version, Release.channel, Release.created_ms).where(
            Release.project_id == project_id
        )
    ).all()
    found: dict[str, list[tuple[str, str, int]]] = {r.id: [] for r in releases}
    for dep in session.execute(
        select(
            Deployment.release_id,
            Deployment.environment_id,
            Deployment.state,
            Deployment.created_ms,
        ).where(
            Deployment.release_id.in_(select(Release.id).where(Release.project_id == project_id))
        )
    ):
        found[dep.release_id].append((dep.environment_id, dep.state, dep.created_ms))
    return [
        RetentionRow(r.id, r.version, r.channel, r.created_ms, tuple(found[r.id])) for r in releases
    ]


def deployments(session: Session, release_id: str) -> list[DeploymentRecord]:
    """Every deployment of a release, oldest first."""
    rows = session.scalars(
        select(Deployment)
        .where(Deployment.release_id == release_id)
        .order_by(Deployment.created_ms, Deployment.id)
    ).all()
    return [
        DeploymentRecord(
            id=r.id,
            release_id=r.release_id,
            environment_id=r.environment_id,
            tenant_id=r.tenant_id,
            task_id=r.task_id,
            state=r.state,
            created_ms=r.created_ms,
            finished_ms=r.finished_ms,
        )
        for r in rows
    ]


def record_deployment(
    session: Session,
    *,
    release_id: str,
    environment_id: str,
    state: str,
    tenant_id: str | None = None,
    task_id: str | None = None,
) -> DeploymentRecord:
    """Record a deployment of a release (the deployment engine's entry point)."""
    owner = session.execute(
        select(Release.space_id, Release.project_id).where(Release.id == release_id)
    ).first()
    if owner is None:
        raise NotFound("release", release_id)
    now = now_ms()
    row = Deployment(
        id=uuid.uuid4().hex,
        release_id=release_id,
        environment_id=environment_id,
        tenant_id=tenant_id,
        task_id=task_id,
        state=state,
        created_ms=now,
        finished_ms=now if state in ("success", "failed", "cancelled") else None,
    )
    session.add(row)
    session.flush()
    dashboard.note_deployment(session, row, space_id=owner.space_id, project_id=owner.project_id)
    return deployments(session, release_id)[-1]


def get_by_id(session: Session, release_id: str) -> ReleaseRecord:
    """The release with this id, or NotFound."""
    row = session.get(Release, release_id)
    if row is None:
        raise NotFound("release", release_id)
    return _record(row)


def set_deployment_state(session: Session, task_id: str, state: str) -> None:
    """Move the deployment run by a task to state; finished states stamp finished_ms."""
    row = session.scalars(select(Deployment).where(Deployment.task_id == task_id)).first()
    if row is None:
        raise NotFound("deployment of task", task_id)
    row.state = state
    if state in ("success", "failed", "cancelled", "timed_out") and row.finished_ms is None:
        row.finished_ms = now_ms()
    session.flush()
    dashboard.note_state(session, row)


def latest_successful(session: Session, project_id: str, environment_id: str) -> ReleaseRecord:
    """The release most recently deployed with success to an environment (what promote takes)."""
    row = session.scalars(
        select(Release)
        .join(Deployment, Deployment.release_id == Release.id)
        .where(
            Release.project_id == project_id,
            Deployment.environment_id == environment_id,
            Deployment.state == "success",
        )
        .order_by(Deployment.finished_ms.desc(), Deployment.created_ms.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFound("successful deployment", environment_id)
    return _record(row)


def successful_versions(session: Session, project_id: str, environment_id: str) -> list[str]:
    """Versions deployed with success to an environment, most recent first, each once."""
    rows = session.execute(
        select(Release.version)
        .join(Deployment, Deployment.release_id == Release.id)
        .where(
            Release.project_id == project_id,
            Deployment.environment_id == environment_id,
            Deployment.state == "success",
        )
        .order_by(Deployment.finished_ms.desc(), Deployment.created_ms.desc())
        .limit(50)
    )
    seen: list[str] = []
    for (version,) in rows:
        if version not in seen:
            seen.append(version)
    return seen
