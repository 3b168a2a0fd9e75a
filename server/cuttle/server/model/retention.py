"""Applying release retention: removes releases no rule keeps, with their deployments' tasks.

Run by each server node on an interval (`retention_interval_seconds`); removal is idempotent,
so nodes running it at once only repeat a no-op. Each removed release is an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from cuttle.server.domain import lifecycles as lc
from cuttle.server.domain import retention
from cuttle.server.model import documents as d
from cuttle.server.model.releases import domain_lifecycle
from cuttle.server.store import documents as doc_store
from cuttle.server.store import events
from cuttle.server.store import releases as release_store

ACTOR = "retention policy"


@dataclass(frozen=True)
class Removed:
    """A release retention removed, and how many task logs went with it."""

    project: str
    version: str
    tasks: int


def apply_retention(session: Session, now_ms: int) -> list[Removed]:
    """Remove, in every space, the releases their lifecycle's retention no longer keeps."""
    removed: list[Removed] = []
    for space in doc_store.list_spaces(session):
        environments = [
            lc.Environment(r.id, r.name)
            for r in doc_store.all_of_kind(session, space.id, "environment")
        ]
        lifecycles = {
            r.id: domain_lifecycle(d.Lifecycle.model_validate(r.body))
            for r in doc_store.all_of_kind(session, space.id, "lifecycle")
        }
        for record in doc_store.all_of_kind(session, space.id, "project"):
            project = d.Project.model_validate(record.body)
            removed += _apply_to_project(
                session, space.id, record.id, project, lifecycles, environments, now_ms
            )
    return removed


def _apply_to_project(
    session: Session,
    space_id: str,
    project_id: str,
    project: d.Project,
    lifecycles: dict[str, lc.Lifecycle],
    environments: list[lc.Environment],
    now_ms: int,
) -> list[Removed]:
    rows = release_store.retention_rows(session, project_id)
    by_lifecycle: dict[str, list[release_store.RetentionRow]] = {}
    for row in rows:
        channel = next(
            (c for c in project.channels if c.name.casefold() == row.channel.casefold()), None
        )
        lifecycle_id = (channel.lifecycle if channel else None) or project.lifecycle
        by_lifecycle.setdefault(lifecycle_id, []).append(row)
    removed: list[Removed] = []
    for lifecycle_id, members in by_lifecycle.items():
        lifecycle = lifecycles.get(lifecycle_id)
        if lifecycle is None:
            continue
        facts = [
            retention.ReleaseFacts(
                row.release_id,
                row.created_ms,
                tuple(retention.DeploymentFacts(*dep) for dep in row.deployments),
            )
            for row in members
        ]
        versions = {row.release_id: row.version for row in members}
        for release_id in retention.removable(lifecycle, environments, facts, now_ms):
            tasks = release_store.delete(session, release_id)
            version = versions[release_id]
            events.record(
                session,
                space_id=space_id,
                actor=ACTOR,
                category="deleted",
                kind="release",
                document_id=None,
                document_name=f"{project.name} {version}",
                message=(
                    f"Removed release {version} of {project.name} and {tasks} task log(s): "
                    f"the lifecycle's retention policy no longer keeps it"
                ),
                details={"project": project.name, "version": version, "tasks": tasks},
            )
            removed.append(Removed(project.name, version, tasks))
    return removed
