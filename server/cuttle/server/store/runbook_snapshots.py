"""Runbook snapshots: frozen runbook processes; publishing one makes it what runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cuttle.server.store.errors import NotFound
from cuttle.server.store.models import RunbookSnapshot
from cuttle.server.store.records import now_ms


@dataclass(frozen=True, slots=True)
class RunbookSnapshotRecord:
    """A stored snapshot of a runbook."""

    id: str
    project_id: str
    runbook: str
    name: str
    snapshot: dict[str, Any]
    published: bool
    created_ms: int
    created_by: str


def _record(row: RunbookSnapshot) -> RunbookSnapshotRecord:
    return RunbookSnapshotRecord(
        id=row.id,
        project_id=row.project_id,
        runbook=row.runbook,
        name=row.name,
        snapshot=dict(row.snapshot),
        published=row.published,
        created_ms=row.created_ms,
        created_by=row.created_by,
    )


def publish(
    session: Session,
    *,
    project_id: str,
    runbook: str,
    name: str,
    snapshot: dict[str, Any],
    created_by: str,
) -> RunbookSnapshotRecord:
    """Store a snapshot and make it the runbook's published one (the previous one stays)."""
    key = runbook.casefold()
    session.execute(
        update(RunbookSnapshot)
        .where(RunbookSnapshot.project_id == project_id, RunbookSnapshot.runbook_key == key)
        .values(published=False)
    )
    row = RunbookSnapshot(
        id=uuid.uuid4().hex,
        project_id=project_id,
        runbook=runbook,
        runbook_key=key,
        name=name,
        snapshot=snapshot,
        published=True,
        created_ms=now_ms(),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return _record(row)


def list_for(session: Session, project_id: str, runbook: str) -> list[RunbookSnapshotRecord]:
    """A runbook's snapshots, newest first."""
    rows = session.scalars(
        select(RunbookSnapshot)
        .where(
            RunbookSnapshot.project_id == project_id,
            RunbookSnapshot.runbook_key == runbook.casefold(),
        )
        .order_by(RunbookSnapshot.created_ms.desc(), RunbookSnapshot.id.desc())
    ).all()
    return [_record(row) for row in rows]


def get_by_id(session: Session, snapshot_id: str) -> RunbookSnapshotRecord:
    """The snapshot with this id, or NotFound."""
    row = session.get(RunbookSnapshot, snapshot_id)
    if row is None:
        raise NotFound("runbook snapshot", snapshot_id)
    return _record(row)
