"""Tasks and their per-machine targets: creation, state changes, claims, cancellation.

State changes are conditional updates whose row count is checked, so two server nodes can never
both move a task out of the same state. Lock order, where a transaction takes both: the tasks
row first, then its task_targets rows (task_log.append_lines does the same).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cuttle.server.store.errors import Conflict, InvalidArgument, NotFound
from cuttle.server.store.models import NAME_LENGTH, Task, TaskTarget
from cuttle.server.store.paging import check_page_size, newest_first, next_token
from cuttle.server.store.records import (
    FINISHED_SCRIPT_STATES,
    FINISHED_TASK_STATES,
    SCRIPT_STATES,
    TASK_STATES,
    UNFINISHED_TASK_STATES,
    ArtifactRef,
    JsonValue,
    OutputVariable,
    Page,
    ScriptState,
    TaskRecord,
    TaskState,
    TaskTargetRecord,
    now_ms,
)

MAX_PAGE_SIZE = 1000


def _task_state(value: str) -> TaskState:
    for state in TASK_STATES:
        if state == value:
            return state
    raise InvalidArgument(f"task state {value!r} is not one of {', '.join(TASK_STATES)}")


def _script_state(value: str) -> ScriptState:
    for state in SCRIPT_STATES:
        if state == value:
            return state
    raise InvalidArgument(f"script state {value!r} is not one of {', '.join(SCRIPT_STATES)}")


def _target_record(row: TaskTarget) -> TaskTargetRecord:
    return TaskTargetRecord(
        task_id=row.task_id,
        machine_name=row.machine_name,
        ticket=row.ticket,
        state=_script_state(row.state),
        exit_code=row.exit_code,
        last_sequence=row.last_sequence,
        message=row.message,
        output_variables=tuple(
            OutputVariable(name=v["name"], value=v["value"], sensitive=v["sensitive"])
            for v in row.output_variables
        ),
        artifacts=tuple(
            ArtifactRef(name=a["name"], path=a["path"], size=a["size"], sha256=a["sha256"])
            for a in row.artifacts
        ),
        finished_ms=row.finished_ms,
    )


def _records(session: Session, rows: Sequence[Task]) -> list[TaskRecord]:
    """Convert task rows to records, loading all their targets in one query."""
    targets: dict[str, list[TaskTargetRecord]] = {row.id: [] for row in rows}
    if rows:
        query = (
            select(TaskTarget)
            .where(TaskTarget.task_id.in_(list(targets)))
            .order_by(TaskTarget.task_id, TaskTarget.machine_name)
        )
        for target in session.scalars(query):
            targets[target.task_id].append(_target_record(target))
    return [
        TaskRecord(
            id=row.id,
            kind="script",
            description=row.description,
            state=_task_state(row.state),
            spec=dict(row.spec),
            created_ms=row.created_ms,
            started_ms=row.started_ms,
            finished_ms=row.finished_ms,
            owner_node=row.owner_node,
            cancel_requested=row.cancel_requested,
            cancel_reason=row.cancel_reason,
            log_count=row.log_count,
            targets=tuple(targets[row.id]),
        )
        for row in rows
    ]


def _load(session: Session, task_id: str) -> Task:
    # populate_existing: conditional updates below bypass the identity map.
    row = session.get(Task, task_id, populate_existing=True)
    if row is None:
        raise NotFound("task", task_id)
    return row


def create_script_task(
    session: Session,
    *,
    description: str,
    spec: Mapping[str, JsonValue],
    machine_names: Sequence[str],
    created_ms: int | None = None,
) -> TaskRecord:
    """Queue a script task with one pending target (and a fresh ticket) per machine."""
    if not machine_names:
        raise InvalidArgument("a script task needs at least one target machine")
    folded = [name.casefold() for name in machine_names]
    if len(set(folded)) != len(folded):
        raise InvalidArgument(f"target machines {list(machine_names)!r} name a machine twice")
    for name in machine_names:
        if not name or len(name) > NAME_LENGTH:
            raise InvalidArgument(f"target machine name {name!r} is empty or too long")
    task = Task(
        id=uuid.uuid4().hex,
        kind="script",
        description=description,
        state="queued",
        spec=dict(spec),
        created_ms=now_ms() if created_ms is None else created_ms,
        started_ms=None,
        finished_ms=None,
        owner_node=None,
        cancel_requested=False,
        cancel_reason="",
        log_count=0,
    )
    session.add(task)
    # Flush the task before its targets: their foreign key needs the row.
    session.flush()
    session.add_all(
        TaskTarget(
            task_id=task.id,
            machine_name=name,
            # The Tentacle knows the script only by this: unique across all tasks.
            ticket=uuid.uuid4().hex,
            state="pending",
            exit_code=None,
            last_sequence=0,
            message="",
            output_variables=[],
            artifacts=[],
            finished_ms=None,
        )
        for name in machine_names
    )
    session.flush()
    return _records(session, [task])[0]


def get(session: Session, task_id: str) -> TaskRecord:
    """Return the task with this id and its targets, or raise NotFound."""
    return _records(session, [_load(session, task_id)])[0]


def list_tasks(
    session: Session,
    *,
    states: Collection[TaskState] = (),
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[TaskRecord]:
    """List tasks newest first, optionally only those in states."""
    check_page_size(page_size, MAX_PAGE_SIZE)
    query = select(Task)
    if states:
        query = query.where(Task.state.in_(sorted(states)))
    query = newest_first(query, Task.created_ms, Task.id, page_token, page_size)
    rows = session.scalars(query).all()
    items = tuple(_records(session, rows[:page_size]))
    more = len(rows) > page_size
    token = next_token(items[-1].created_ms, items[-1].id, more) if items else None
    return Page(items=items, next_page_token=token)


def set_state(
    session: Session,
    task_id: str,
    state: TaskState,
    *,
    expected: Collection[TaskState] | None = None,
    at_ms: int | None = None,
) -> TaskRecord:
    """Move a task to state, but only from one of expected (default: any unfinished state)."""
    state = _task_state(state)
    from_states = sorted(UNFINISHED_TASK_STATES if expected is None else expected)
    at = now_ms() if at_ms is None else at_ms
    values: dict[str, Any] = {"state": state}
    if state == "running":
        # Resuming a task that was running already must not move its start.
        values["started_ms"] = func.coalesce(Task.started_ms, at)
    if state in FINISHED_TASK_STATES:
        values["finished_ms"] = at
    statement = update(Task).where(Task.id == task_id, Task.state.in_(from_states))
    result = session.execute(
        statement.values(**values).execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 0:
        current = _load(session, task_id)
        raise Conflict(
            f"task {task_id} is {current.state}, not {' or '.join(from_states)}:"
            f" it cannot become {state}"
        )
    return get(session, task_id)


def _rowcount(result: Any) -> int:
    count = result.rowcount
    if not isinstance(count, int):
        raise TypeError(f"expected an integer row count, got {count!r}")
    return count


def claim_next_queued(
    session: Session, node: str, *, at_ms: int | None = None
) -> TaskRecord | None:
    """Take the oldest queued task for node and mark it running; None when none is queued."""
    at = now_ms() if at_ms is None else at_ms
    # SKIP LOCKED: nodes claiming at the same time each get a different task instead of
    # queueing behind one row lock. (SQLite ignores it; BEGIN IMMEDIATE serializes there.)
    candidate = session.scalar(
        select(Task.id)
        .where(Task.state == "queued")
        .order_by(Task.created_ms, Task.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if candidate is None:
        return None
    result = session.execute(
        update(Task)
        .where(Task.id == candidate, Task.state == "queued")
        .values(state="running", owner_node=node, started_ms=at)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 0:
        return None
    return get(session, candidate)


def claim(session: Session, task_id: str, node: str, *, previous_owner: str | None) -> TaskRecord:
    """Make node the owner of an unfinished task, if previous_owner still owns it (resumption)."""
    owner_matches = (
        Task.owner_node.is_(None) if previous_owner is None else Task.owner_node == previous_owner
    )
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.state.in_(UNFINISHED_TASK_STATES), owner_matches)
        .values(owner_node=node)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 0:
        current = _load(session, task_id)
        raise Conflict(
            f"task {task_id} is {current.state} and owned by {current.owner_node!r},"
            f" not {previous_owner!r}: node {node!r} cannot claim it"
        )
    return get(session, task_id)


def unfinished_tasks(session: Session, *, owner_node: str | None = None) -> list[TaskRecord]:
    """Return queued and running tasks, oldest first (optionally only those owned by a node)."""
    query = select(Task).where(Task.state.in_(UNFINISHED_TASK_STATES))
    if owner_node is not None:
        query = query.where(Task.owner_node == owner_node)
    rows = session.scalars(query.order_by(Task.created_ms, Task.id)).all()
    return _records(session, rows)


def request_cancel(
    session: Session, task_id: str, reason: str, *, at_ms: int | None = None
) -> TaskRecord:
    """Ask for a task to stop: a queued one is cancelled at once, a running one flagged."""
    at = now_ms() if at_ms is None else at_ms
    # A queued task has reached no Tentacle yet, so nothing needs to be told: cancel it here.
    session.execute(
        update(Task)
        .where(Task.id == task_id, Task.state == "queued")
        .values(
            state="cancelled",
            cancel_requested=True,
            cancel_reason=reason,
            finished_ms=at,
        )
        .execution_options(synchronize_session=False)
    )
    # The first reason wins: the engine may already be acting on it.
    session.execute(
        update(Task)
        .where(Task.id == task_id, Task.state == "running", Task.cancel_requested.is_(False))
        .values(cancel_requested=True, cancel_reason=reason)
        .execution_options(synchronize_session=False)
    )
    # Cancelling a finished task changes nothing and is not an error: the caller's intent holds.
    return get(session, task_id)


def get_target(session: Session, task_id: str, machine_name: str) -> TaskTargetRecord:
    """Return one machine's part of a task, or raise NotFound."""
    row = session.get(TaskTarget, (task_id, machine_name), populate_existing=True)
    if row is None:
        raise NotFound("task target", f"{task_id}/{machine_name}")
    return _target_record(row)


def get_target_by_ticket(session: Session, ticket: str) -> TaskTargetRecord:
    """Return the task target a Tentacle knows by ticket, or raise NotFound."""
    row = session.scalars(select(TaskTarget).where(TaskTarget.ticket == ticket)).one_or_none()
    if row is None:
        raise NotFound("ticket", ticket)
    return _target_record(row)


def update_target(
    session: Session,
    task_id: str,
    machine_name: str,
    *,
    state: ScriptState,
    exit_code: int | None = None,
    message: str | None = None,
    output_variables: Sequence[OutputVariable] | None = None,
    artifacts: Sequence[ArtifactRef] | None = None,
    at_ms: int | None = None,
) -> TaskTargetRecord:
    """Record a target's script state and results; None leaves a field as it was."""
    row = session.get(TaskTarget, (task_id, machine_name), populate_existing=True)
    if row is None:
        raise NotFound("task target", f"{task_id}/{machine_name}")
    if row.state in FINISHED_SCRIPT_STATES and row.state != state:
        # A finished script stays finished: a late or replayed status must not rewrite it.
        raise Conflict(
            f"the script of task {task_id} on {machine_name!r} already ended as {row.state}"
        )
    row.state = _script_state(state)
    if exit_code is not None:
        row.exit_code = exit_code
    if message is not None:
        row.message = message
    if output_variables is not None:
        row.output_variables = [
            {"name": v.name, "value": v.value, "sensitive": v.sensitive} for v in output_variables
        ]
    if artifacts is not None:
        row.artifacts = [
            {"name": a.name, "path": a.path, "size": a.size, "sha256": a.sha256} for a in artifacts
        ]
    if state in FINISHED_SCRIPT_STATES and row.finished_ms is None:
        row.finished_ms = now_ms() if at_ms is None else at_ms
    session.flush()
    return _target_record(row)
