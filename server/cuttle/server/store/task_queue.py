"""The task queue in the database: node heartbeats, claims with leases, and why a task waits.

Every node claims tasks for itself, in one transaction each time: it adopts unfinished tasks
whose owner's lease ran out (the owner died), then starts queued tasks oldest first while it
has free slots (its task cap; a task waiting for a person does not take a slot), never two
deployments of one project, environment and tenant at once. Queued tasks it cannot start get
their waiting reason written. Rows are taken with FOR UPDATE SKIP LOCKED, so nodes claiming at
the same moment each get different tasks (SQLite serializes writers with BEGIN IMMEDIATE).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from cuttle.server.domain.task_states import UNFINISHED_TASK_STATES, TaskKind, TaskState
from cuttle.server.store.models import ServerNode, Task

# How many queued tasks one claim looks at (the rest wait for the next pass).
_LOOK_AHEAD = 200
_SLOT_STATES = (TaskState.RUNNING.value, TaskState.CANCELLING.value)


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim gave this node: tasks to start, and tasks to resume from a dead owner."""

    started: tuple[str, ...]
    adopted: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A server node as its heartbeat row says."""

    id: str
    started_ms: int
    heartbeat_ms: int
    task_cap: int
    tasks: int


# The three fields of a deployment's spec that make its concurrency key, read in SQL
# (json_extract / ->>) so a claim does not fetch and parse every queued task's whole spec.
_KEY_COLUMNS = (
    Task.spec["project_id"].as_string(),
    Task.spec["environment_id"].as_string(),
    Task.spec["tenant_id"].as_string(),
)


def _concurrency_key(
    kind: str, project: str | None, environment: str | None, tenant: str | None
) -> tuple[str, str, str] | None:
    if kind != TaskKind.DEPLOYMENT.value:
        return None
    return (project or "", environment or "", tenant or "")


def heartbeat(
    session: Session, node: str, *, now_ms: int, lease_ms: int, task_cap: int, started_ms: int
) -> list[str]:
    """Say this node lives and renew its leases; returns the unfinished tasks it owns."""
    row = session.get(ServerNode, node)
    if row is None:
        session.add(
            ServerNode(id=node, started_ms=started_ms, heartbeat_ms=now_ms, task_cap=task_cap)
        )
    else:
        row.heartbeat_ms = now_ms
        row.task_cap = task_cap
        row.started_ms = started_ms
    session.execute(
        update(Task)
        .where(Task.owner_node == node, Task.state.in_(sorted(UNFINISHED_TASK_STATES)))
        .values(lease_expires_ms=now_ms + lease_ms)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return list(
        session.scalars(
            select(Task.id).where(
                Task.owner_node == node, Task.state.in_(sorted(UNFINISHED_TASK_STATES))
            )
        )
    )


def claim(
    session: Session,
    node: str,
    *,
    now_ms: int,
    lease_ms: int,
    task_cap: int,
    queue_limit_ms: int = 0,
) -> Claimed:
    """Adopt tasks whose owner's lease ran out, then start queued ones while slots are free.

    A task queued for longer than queue_limit_ms (0: no limit) ends cancelled, saying why.
    """
    expires = now_ms + lease_ms
    if queue_limit_ms > 0:
        reason = (
            f"it waited in the queue longer than the limit of {queue_limit_ms / 1000:g}s "
            "(queue_wait_limit_seconds)"
        )
        session.execute(
            update(Task)
            .where(
                Task.state == TaskState.QUEUED.value,
                Task.created_ms < now_ms - queue_limit_ms,
            )
            .values(
                state=TaskState.CANCELLED.value,
                reason=reason,
                cancel_reason=reason,
                finished_ms=now_ms,
                waiting_reason="",
            )
            .execution_options(synchronize_session=False)
        )
    unfinished_started = sorted(UNFINISHED_TASK_STATES - {TaskState.QUEUED})
    orphans = list(
        session.scalars(
            select(Task.id)
            .where(
                Task.state.in_(unfinished_started),
                or_(Task.owner_node.is_(None), Task.owner_node != node),
                or_(Task.lease_expires_ms.is_(None), Task.lease_expires_ms < now_ms),
            )
            .order_by(Task.created_ms, Task.id)
            .with_for_update(skip_locked=True)
        )
    )
    if orphans:
        session.execute(
            update(Task)
            .where(Task.id.in_(orphans))
            .values(owner_node=node, lease_expires_ms=expires)
            .execution_options(synchronize_session=False)
        )
    busy = int(
        session.scalar(
            select(func.count())
            .select_from(Task)
            .where(Task.owner_node == node, Task.state.in_(_SLOT_STATES))
        )
        or 0
    )
    # Deployments already started hold their project/environment/tenant.
    held: dict[tuple[str, str, str], str] = {}
    for task_id, kind, project, environment, tenant in session.execute(
        select(Task.id, Task.kind, *_KEY_COLUMNS).where(
            Task.kind == TaskKind.DEPLOYMENT.value, Task.state.in_(unfinished_started)
        )
    ):
        key = _concurrency_key(kind, project, environment, tenant)
        if key is not None:
            held.setdefault(key, task_id)
    queued = session.execute(
        select(Task.id, Task.kind, *_KEY_COLUMNS, Task.waiting_reason)
        .where(Task.state == TaskState.QUEUED.value)
        .order_by(Task.created_ms, Task.id)
        .limit(_LOOK_AHEAD)
    ).all()
    started: list[str] = []
    reasons: dict[str, str] = {}
    for task_id, kind, project, environment, tenant, current_reason in queued:
        key = _concurrency_key(kind, project, environment, tenant)
        if key is not None and key in held:
            reason = f"waiting for task {held[key]} (same project and environment)"
        elif busy >= task_cap:
            reason = f"waiting for a task slot ({busy} of {task_cap} busy)"
        else:
            started.append(task_id)
            busy += 1
            if key is not None:
                held[key] = task_id
            continue
        if key is not None:
            # FIFO per project and environment: a later one waits behind this one too.
            held.setdefault(key, task_id)
        if reason != current_reason:
            reasons[task_id] = reason
    if started:
        # The look-ahead reads without locking 200 rows per claim; the state guard makes each
        # start happen once, and RETURNING says which ones this node won.
        won = set(
            session.scalars(
                update(Task)
                .where(Task.id.in_(started), Task.state == TaskState.QUEUED.value)
                .values(
                    state=TaskState.RUNNING.value,
                    owner_node=node,
                    lease_expires_ms=expires,
                    started_ms=func.coalesce(Task.started_ms, now_ms),
                    waiting_reason="",
                )
                .returning(Task.id)
                .execution_options(synchronize_session=False)
            )
        )
        started = [task_id for task_id in started if task_id in won]
    # One statement per distinct reason, not per task: a long queue mostly shares one or two.
    by_reason: dict[str, list[str]] = {}
    for task_id, reason in reasons.items():
        by_reason.setdefault(reason, []).append(task_id)
    for reason, task_ids in by_reason.items():
        session.execute(
            update(Task)
            .where(Task.id.in_(task_ids), Task.state == TaskState.QUEUED.value)
            .values(waiting_reason=reason)
            .execution_options(synchronize_session=False)
        )
    return Claimed(tuple(started), tuple(orphans))


def nodes(session: Session) -> list[NodeRecord]:
    """Every node that ever beat, with how many unfinished tasks it holds."""
    held = dict(
        session.execute(
            select(Task.owner_node, func.count())
            .where(Task.state.in_(sorted(UNFINISHED_TASK_STATES)))
            .group_by(Task.owner_node)
        ).all()
    )
    return [
        NodeRecord(row.id, row.started_ms, row.heartbeat_ms, row.task_cap, int(held.get(row.id, 0)))
        for row in session.scalars(select(ServerNode).order_by(ServerNode.id))
    ]
