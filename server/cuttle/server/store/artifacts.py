"""Artifacts downloaded from Tentacles, kept in the database until a blob store exists."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from cuttle.server.store.errors import Conflict, NotFound
from cuttle.server.store.models import ArtifactBlob, ScriptRun
from cuttle.server.store.records import ArtifactBlobRecord


def _record(row: ArtifactBlob) -> ArtifactBlobRecord:
    return ArtifactBlobRecord(
        task_id=row.task_id,
        machine_name=row.machine_name,
        name=row.name,
        sha256=row.sha256,
        size=row.size,
    )


def put(
    session: Session, task_id: str, machine_name: str, name: str, content: bytes
) -> ArtifactBlobRecord:
    """Store an artifact's content; storing the same content again is harmless."""
    if (
        session.scalar(
            select(ScriptRun.ticket)
            .where(ScriptRun.task_id == task_id, ScriptRun.machine_name == machine_name)
            .limit(1)
        )
        is None
    ):
        raise NotFound("task machine", f"{task_id}/{machine_name}")
    digest = hashlib.sha256(content).hexdigest()
    existing = session.get(ArtifactBlob, (task_id, machine_name, name))
    if existing is not None:
        # A retried download stores the same bytes; different bytes under one name is a bug.
        if existing.sha256 != digest:
            raise Conflict(
                f"artifact {name!r} of task {task_id} on {machine_name!r} is stored already"
                " with different content"
            )
        return _record(existing)
    row = ArtifactBlob(
        task_id=task_id,
        machine_name=machine_name,
        name=name,
        content=bytes(content),
        sha256=digest,
        size=len(content),
    )
    session.add(row)
    session.flush()
    return _record(row)


def get_content(session: Session, task_id: str, machine_name: str, name: str) -> bytes:
    """Return an artifact's bytes, or raise NotFound."""
    content = session.scalar(
        select(ArtifactBlob.content).where(
            ArtifactBlob.task_id == task_id,
            ArtifactBlob.machine_name == machine_name,
            ArtifactBlob.name == name,
        )
    )
    if content is None:
        raise NotFound("artifact", f"{task_id}/{machine_name}/{name}")
    return bytes(content)


def list_for_task(session: Session, task_id: str) -> list[ArtifactBlobRecord]:
    """Return the artifacts stored for a task (without their bytes), by machine and name."""
    rows = session.execute(
        select(
            ArtifactBlob.task_id,
            ArtifactBlob.machine_name,
            ArtifactBlob.name,
            ArtifactBlob.sha256,
            ArtifactBlob.size,
        )
        .where(ArtifactBlob.task_id == task_id)
        .order_by(ArtifactBlob.machine_name, ArtifactBlob.name)
    ).all()
    return [
        ArtifactBlobRecord(task_id=t, machine_name=m, name=n, sha256=s, size=z)
        for t, m, n, s, z in rows
    ]
