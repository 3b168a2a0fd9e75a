"""Tasks, their trees (step → action → machine nodes) and script runs: creation, moves, claims.

State changes are conditional updates whose row count is checked, so two server nodes can never
both move a task out of the same state; the allowed moves are the domain's (task_states.py).
Lock order, where a transaction takes several: the tasks row first, then its nodes and runs
(task_log.append_runs does the same).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, func, inspect, select, update
from sqlalchemy.orm import Session

from cuttle.server.domain.scripts import Artifact, RemoteVariable
from cuttle.server.domain.task_specs import (
    ScriptTaskSpec,
    TaskSpec,
    spec_from_json,
    spec_to_json,
)
from cuttle.server.domain.task_states import (
    FINISHED_TASK_STATES,
    UNFINISHED_TASK_STATES,
    NodeKind,
    NodeState,
    RunState,
    TaskKind,
    TaskState,
    node_may_move,
    node_state_of_run,
    run_may_move,
    task_states_moving_to,
)
from cuttle.server.store.errors import Conflict, InvalidArgument, NotFound
from cuttle.server.store.models import NAME_LENGTH, ScriptRun, Task, TaskNode
from cuttle.server.store.paging import check_page_size, newest_first, next_token
from cuttle.server.store.records import (
    Page,
    ScriptRunRecord,
    TaskNodeRecord,
    TaskRecord,
    now_ms,
)

MAX_PAGE_SIZE = 1000
SCRIPT_STEP = "Run script"


@dataclass(frozen=True)
class PlannedNode:
    """A node to create with a task: its kind, name, machine and children, in plan order."""

    kind: NodeKind
    name: str
    machine_name: str | None = None
    children: tuple[PlannedNode, ...] = ()
    state: NodeState = NodeState.PENDING
    reason: str = ""


@dataclass
class _Counter:
    next: int = 0
    rows: list[TaskNode] = field(default_factory=list)


_UNFINISHED_NODE_VALUES = (NodeState.PENDING.value, NodeState.RUNNING.value)
# Ids per IN list: well under SQLite's limit on bound parameters in one statement.
_ID_BATCH = 500


def _run_record(row: ScriptRun | Row[Any]) -> ScriptRunRecord:
    return ScriptRunRecord(
        ticket=row.ticket,
        task_id=row.task_id,
        node_id=row.node_id,
        machine_name=row.machine_name,
        attempt=row.attempt,
        state=RunState(row.state),
        exit_code=row.exit_code,
        last_sequence=row.last_sequence,
        message=row.message,
        output_variables=tuple(
            RemoteVariable(name=v["name"], value=v["value"], sensitive=v["sensitive"])
            for v in row.output_variables
        ),
        artifacts=tuple(
            Artifact(name=a["name"], path=a["path"], size=a["size"], sha256=a["sha256"])
            for a in row.artifacts
        ),
        created_ms=row.created_ms,
        finished_ms=row.finished_ms,
    )


def _node_record(row: TaskNode | Row[Any], runs: Sequence[ScriptRunRecord]) -> TaskNodeRecord:
    return TaskNodeRecord(
        id=row.id,
        task_id=row.task_id,
        parent_id=row.parent_id,
        kind=NodeKind(row.kind),
        position=row.position,
        name=row.name,
        machine_name=row.machine_name,
        state=NodeState(row.state),
        reason=row.reason,
        started_ms=row.started_ms,
        ended_ms=row.ended_ms,
        runs=tuple(runs),
    )


# Every column of a tree's rows, read as plain rows: a task's tree is read whole and often (each
# follower's look at the task, each `task show`), and ORM objects for every node and run of it
# cost several times what the records built from them do.
_NODE_COLUMNS = tuple(getattr(TaskNode, a.key) for a in inspect(TaskNode).column_attrs)
_RUN_COLUMNS = tuple(getattr(ScriptRun, a.key) for a in inspect(ScriptRun).column_attrs)


def _records(session: Session, rows: Sequence[Task]) -> list[TaskRecord]:
    """Convert task rows to records, loading their trees and runs in two queries."""
    ids = [row.id for row in rows]
    nodes: dict[str, list[Row[Any]]] = {i: [] for i in ids}
    runs: dict[str, list[ScriptRunRecord]] = {}
    if ids:
        for node in session.execute(
            select(*_NODE_COLUMNS)
            .where(TaskNode.task_id.in_(ids))
            .order_by(TaskNode.task_id, TaskNode.position)
        ):
            nodes[node.task_id].append(node)
        for run in session.execute(
            select(*_RUN_COLUMNS)
            .where(ScriptRun.task_id.in_(ids))
            .order_by(ScriptRun.node_id, ScriptRun.attempt)
        ):
            runs.setdefault(run.node_id, []).append(_run_record(run))
    return [
        TaskRecord(
            id=row.id,
            kind=TaskKind(row.kind),
            description=row.description,
            state=TaskState(row.state),
            spec=spec_from_json(TaskKind(row.kind), row.spec),
            created_ms=row.created_ms,
            started_ms=row.started_ms,
            finished_ms=row.finished_ms,
            owner_node=row.owner_node,
            cancel_requested=row.cancel_requested,
            cancel_reason=row.cancel_reason,
            log_count=row.log_count,
            nodes=tuple(_node_record(n, runs.get(n.id, ())) for n in nodes[row.id]),
            waiting_reason=row.waiting_reason,
            has_warnings=row.has_warnings,
            reason=row.reason,
            started_by=row.started_by,
        )
        for row in rows
    ]


def _load(session: Session, task_id: str) -> Task:
    # populate_existing: conditional updates below bypass the identity map.
    row = session.get(Task, task_id, populate_existing=True)
    if row is None:
        raise NotFound("task", task_id)
    return row


def create_task(
    session: Session,
    *,
    description: str,
    spec: TaskSpec,
    plan: Sequence[PlannedNode],
    created_ms: int | None = None,
    started_by: str = "",
) -> TaskRecord:
    """Queue a task with its tree of pending nodes, in plan order."""
    task = Task(
        id=uuid.uuid4().hex,
        kind=spec.kind,
        description=description,
        state=TaskState.QUEUED.value,
        spec=spec_to_json(spec),
        created_ms=now_ms() if created_ms is None else created_ms,
        started_ms=None,
        finished_ms=None,
        owner_node=None,
        cancel_requested=False,
        cancel_reason="",
        log_count=0,
        waiting_reason="",
        has_warnings=False,
        reason="",
        started_by=started_by[:NAME_LENGTH],
    )
    session.add(task)
    # Flush the task before its nodes: their foreign key needs the row.
    session.flush()
    counter = _Counter()
    for planned in plan:
        _add_nodes(task.id, None, planned, counter)
    session.add_all(counter.rows)
    session.flush()
    return _records(session, [task])[0]


def _add_nodes(task_id: str, parent: str | None, planned: PlannedNode, counter: _Counter) -> None:
    row = TaskNode(
        id=uuid.uuid4().hex,
        task_id=task_id,
        parent_id=parent,
        kind=planned.kind.value,
        position=counter.next,
        name=planned.name[:NAME_LENGTH],
        machine_name=planned.machine_name,
        state=planned.state.value,
        reason=planned.reason,
        started_ms=None,
        ended_ms=None,
    )
    counter.next += 1
    counter.rows.append(row)
    for child in planned.children:
        _add_nodes(task_id, row.id, child, counter)


def create_script_task(
    session: Session,
    *,
    description: str,
    spec: ScriptTaskSpec,
    machine_names: Sequence[str],
    created_ms: int | None = None,
    started_by: str = "",
) -> TaskRecord:
    """Queue an ad-hoc script: one step and action, a machine node with a first run each."""
    if not machine_names:
        raise InvalidArgument("a script task needs at least one target machine")
    folded = [name.casefold() for name in machine_names]
    if len(set(folded)) != len(folded):
        raise InvalidArgument(f"target machines {list(machine_names)!r} name a machine twice")
    for name in machine_names:
        if not name or len(name) > NAME_LENGTH:
            raise InvalidArgument(f"target machine name {name!r} is empty or too long")
    machines = tuple(PlannedNode(NodeKind.MACHINE, name, name) for name in machine_names)
    action = PlannedNode(NodeKind.ACTION, SCRIPT_STEP, children=machines)
    task = create_task(
        session,
        description=description,
        spec=spec,
        plan=[PlannedNode(NodeKind.STEP, SCRIPT_STEP, children=(action,))],
        created_ms=created_ms,
        started_by=started_by,
    )
    for node in task.machine_nodes:
        add_run(session, node.id)
    return get(session, task.id)


def add_run(session: Session, node_id: str) -> ScriptRunRecord:
    """Give a machine node its next script run, under a fresh ticket (a retry is a new run)."""
    node = session.get(TaskNode, node_id, populate_existing=True)
    if node is None or node.kind != NodeKind.MACHINE or node.machine_name is None:
        raise NotFound("machine node", node_id)
    attempts = session.scalar(
        select(func.count()).select_from(ScriptRun).where(ScriptRun.node_id == node_id)
    )
    row = ScriptRun(
        # The Tentacle knows the script only by this: unique across all tasks.
        ticket=uuid.uuid4().hex,
        task_id=node.task_id,
        node_id=node_id,
        machine_name=node.machine_name,
        attempt=int(attempts or 0) + 1,
        state=RunState.PENDING.value,
        exit_code=None,
        last_sequence=0,
        message="",
        output_variables=[],
        artifacts=[],
        created_ms=now_ms(),
        finished_ms=None,
    )
    session.add(row)
    session.flush()
    return _run_record(row)


def get(session: Session, task_id: str) -> TaskRecord:
    """Return the task with this id and its tree, or raise NotFound."""
    return _records(session, [_load(session, task_id)])[0]


def list_tasks(
    session: Session,
    *,
    states: Collection[TaskState] = (),
    started_by: str = "",
    since_ms: int = 0,
    keep: Callable[[TaskRecord], bool] | None = None,
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[TaskRecord]:
    """List tasks newest first, filtered by state, starter and age, then by `keep`.

    `keep` holds what SQL cannot see (permissions, the spec's project): rows are read in
    batches until the page is full, so a page is short only at the end of the list.
    """
    check_page_size(page_size, MAX_PAGE_SIZE)
    query = select(Task)
    if states:
        query = query.where(Task.state.in_(sorted(TaskState(s).value for s in states)))
    if started_by:
        query = query.where(func.lower(Task.started_by) == started_by.casefold())
    if since_ms:
        query = query.where(Task.created_ms >= since_ms)
    items: list[TaskRecord] = []
    token = page_token
    more = True
    while more and len(items) < page_size:
        rows = session.scalars(
            newest_first(query, Task.created_ms, Task.id, token, page_size)
        ).all()
        batch = _records(session, rows[:page_size])
        more = len(rows) > page_size
        if not batch:
            break
        token = next_token(batch[-1].created_ms, batch[-1].id, True)
        items.extend(t for t in batch if keep is None or keep(t))
    page = tuple(items[:page_size])
    # More to read if the store has more rows, or this batch kept more than fits.
    has_more = more or len(items) > page_size
    next_page = next_token(page[-1].created_ms, page[-1].id, has_more) if page else None
    return Page(items=page, next_page_token=next_page)


def resolve_id(session: Session, given: str) -> str:
    """The full id of the one task whose id starts with `given` (a unique prefix will do)."""
    text = given.strip().lower()
    if not text:
        raise InvalidArgument("give a task id (or a unique prefix of one)")
    if session.get(Task, text) is not None:
        return text
    # Ids are hex: a LIKE pattern needs no escaping once anything else is refused.
    if any(c not in "0123456789abcdef" for c in text):
        raise NotFound("task", given)
    ids = session.scalars(select(Task.id).where(Task.id.like(f"{text}%")).limit(11)).all()
    if not ids:
        raise NotFound("task", given)
    if len(ids) > 1:
        shown = ", ".join(sorted(ids)[:10]) + (", ..." if len(ids) > 10 else "")
        raise InvalidArgument(f"task id prefix {given!r} matches several tasks: {shown}")
    return str(ids[0])


def set_state(
    session: Session,
    task_id: str,
    state: TaskState,
    *,
    expected: Collection[TaskState] | None = None,
    reason: str | None = None,
    waiting_reason: str | None = None,
    at_ms: int | None = None,
) -> TaskRecord:
    """Move a task to state, only from one of expected (default: any it may move from)."""
    state = TaskState(state)
    from_states = sorted(
        TaskState(s).value for s in (task_states_moving_to(state) if expected is None else expected)
    )
    at = now_ms() if at_ms is None else at_ms
    values: dict[str, Any] = {"state": state.value}
    if state == TaskState.RUNNING:
        # Resuming a task that was running already must not move its start.
        values["started_ms"] = func.coalesce(Task.started_ms, at)
    if state in FINISHED_TASK_STATES:
        values["finished_ms"] = at
        values["waiting_reason"] = ""
    if reason is not None:
        values["reason"] = reason
    if waiting_reason is not None:
        values["waiting_reason"] = waiting_reason
    elif state == TaskState.RUNNING:
        values["waiting_reason"] = ""
    statement = update(Task).where(Task.id == task_id, Task.state.in_(from_states))
    result = session.execute(
        statement.values(**values).execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 0:
        current = _load(session, task_id)
        raise Conflict(
            f"task {task_id} is {current.state}, not {' or '.join(from_states)}:"
            f" it cannot become {state.value}"
        )
    return get(session, task_id)


def set_waiting_reason(session: Session, task_id: str, reason: str) -> None:
    """Say why an unfinished task is not moving (empty: it is)."""
    session.execute(
        update(Task)
        .where(Task.id == task_id, Task.state.in_(sorted(UNFINISHED_TASK_STATES)))
        .values(waiting_reason=reason)
        .execution_options(synchronize_session=False)
    )


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
        .where(Task.state == TaskState.QUEUED.value)
        .order_by(Task.created_ms, Task.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if candidate is None:
        return None
    result = session.execute(
        update(Task)
        .where(Task.id == candidate, Task.state == TaskState.QUEUED.value)
        .values(state=TaskState.RUNNING.value, owner_node=node, started_ms=at)
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
        .where(
            Task.id == task_id,
            Task.state.in_(sorted(UNFINISHED_TASK_STATES)),
            owner_matches,
        )
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
    """Return the tasks not finished yet, oldest first (optionally only those of one node)."""
    query = select(Task).where(Task.state.in_(sorted(UNFINISHED_TASK_STATES)))
    if owner_node is not None:
        query = query.where(Task.owner_node == owner_node)
    rows = session.scalars(query.order_by(Task.created_ms, Task.id)).all()
    return _records(session, rows)


def request_cancel(
    session: Session, task_id: str, reason: str, *, at_ms: int | None = None
) -> TaskRecord:
    """Ask for a task to stop: a queued one is cancelled at once, a started one is cancelling."""
    at = now_ms() if at_ms is None else at_ms
    # A queued task has reached no Tentacle yet, so nothing needs to be told: cancel it here.
    session.execute(
        update(Task)
        .where(Task.id == task_id, Task.state == TaskState.QUEUED.value)
        .values(
            state=TaskState.CANCELLED.value,
            cancel_requested=True,
            cancel_reason=reason,
            reason=reason,
            finished_ms=at,
            waiting_reason="",
        )
        .execution_options(synchronize_session=False)
    )
    # The first reason wins: the engine may already be acting on it.
    session.execute(
        update(Task)
        .where(
            Task.id == task_id,
            Task.state.in_([TaskState.RUNNING.value, TaskState.WAITING.value]),
            Task.cancel_requested.is_(False),
        )
        .values(
            state=TaskState.CANCELLING.value,
            cancel_requested=True,
            cancel_reason=reason,
            waiting_reason="",
        )
        .execution_options(synchronize_session=False)
    )
    # Cancelling a finished task changes nothing and is not an error: the caller's intent holds.
    return get(session, task_id)


def get_run(session: Session, ticket: str) -> ScriptRunRecord:
    """Return the script run a Tentacle knows by ticket, or raise NotFound."""
    row = session.get(ScriptRun, ticket, populate_existing=True)
    if row is None:
        raise NotFound("ticket", ticket)
    return _run_record(row)


def get_node(session: Session, node_id: str) -> TaskNodeRecord:
    """Return one node of a task's tree (with its runs), or raise NotFound."""
    row = session.get(TaskNode, node_id, populate_existing=True)
    if row is None:
        raise NotFound("task node", node_id)
    runs = session.scalars(
        select(ScriptRun).where(ScriptRun.node_id == node_id).order_by(ScriptRun.attempt)
    )
    return _node_record(row, [_run_record(r) for r in runs])


@dataclass(frozen=True)
class RunUpdate:
    """A run as stored by an update, and its machine node as that update left it.

    `node` is None when the update did not touch the node (a run still pending); its `runs`
    are not loaded: the caller knows them, and reading them again is what this saves.
    """

    run: ScriptRunRecord
    node: TaskNodeRecord | None


def update_run(
    session: Session,
    ticket: str,
    *,
    state: RunState,
    exit_code: int | None = None,
    message: str | None = None,
    output_variables: Sequence[RemoteVariable] | None = None,
    artifacts: Sequence[Artifact] | None = None,
    at_ms: int | None = None,
) -> ScriptRunRecord:
    """Record a run's state and results, and its machine node's; None leaves a field as it was.

    A finished run never changes state: a late or replayed status must not rewrite it.
    """
    return update_run_and_node(
        session,
        ticket,
        state=state,
        exit_code=exit_code,
        message=message,
        output_variables=output_variables,
        artifacts=artifacts,
        at_ms=at_ms,
    ).run


def update_run_and_node(
    session: Session,
    ticket: str,
    *,
    state: RunState,
    exit_code: int | None = None,
    message: str | None = None,
    output_variables: Sequence[RemoteVariable] | None = None,
    artifacts: Sequence[Artifact] | None = None,
    at_ms: int | None = None,
) -> RunUpdate:
    """`update_run`, also returning the machine node as the update left it (no re-read needed)."""
    state = RunState(state)
    row = session.get(ScriptRun, ticket, populate_existing=True)
    if row is None:
        raise NotFound("ticket", ticket)
    if not run_may_move(RunState(row.state), state):
        raise Conflict(
            f"the script {ticket} of task {row.task_id} on {row.machine_name!r}"
            f" is {row.state}: it cannot become {state.value}"
        )
    at = now_ms() if at_ms is None else at_ms
    row.state = state.value
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
    finished = state not in (RunState.PENDING, RunState.RUNNING)
    if finished and row.finished_ms is None:
        row.finished_ms = at
    node = None
    if state != RunState.PENDING:
        node_state = node_state_of_run(state, row.exit_code)
        node = set_node_state(
            session,
            row.node_id,
            node_state,
            reason=row.message if node_state != NodeState.SUCCESS else "",
            at_ms=at,
        )
    session.flush()
    return RunUpdate(_run_record(row), node)


def set_node_state(
    session: Session,
    node_id: str,
    state: NodeState,
    *,
    reason: str | None = None,
    at_ms: int | None = None,
) -> TaskNodeRecord:
    """Move a node to state (if the domain allows the move); stamps its start and end."""
    state = NodeState(state)
    row = session.get(TaskNode, node_id, populate_existing=True)
    if row is None:
        raise NotFound("task node", node_id)
    if not node_may_move(NodeState(row.state), state):
        raise Conflict(f"task node {row.name!r} is {row.state}: it cannot become {state.value}")
    at = now_ms() if at_ms is None else at_ms
    row.state = state.value
    if reason is not None:
        row.reason = reason
    if state != NodeState.PENDING and row.started_ms is None:
        row.started_ms = at
    if state in (NodeState.PENDING, NodeState.RUNNING):
        row.ended_ms = None
    elif row.ended_ms is None:
        row.ended_ms = at
    session.flush()
    return _node_record(row, ())


def node_states(session: Session, node_ids: Sequence[str]) -> dict[str, NodeState]:
    """The stored state of each of these nodes, by id, in one query per batch of ids."""
    states: dict[str, NodeState] = {}
    for start in range(0, len(node_ids), _ID_BATCH):
        batch = list(node_ids[start : start + _ID_BATCH])
        for node_id, state in session.execute(
            select(TaskNode.id, TaskNode.state).where(TaskNode.id.in_(batch))
        ):
            states[str(node_id)] = NodeState(state)
    missing = [i for i in node_ids if i not in states]
    if missing:
        raise NotFound("task node", missing[0])
    return states


def note_node_reason(session: Session, node_id: str, reason: str) -> None:
    """Set an unfinished node's reason without moving its state (why it waits, and since when)."""
    session.execute(
        update(TaskNode)
        .where(TaskNode.id == node_id, TaskNode.state.in_(_UNFINISHED_NODE_VALUES))
        .values(reason=reason)
        .execution_options(synchronize_session=False)
    )


def cancel_requested_among(session: Session, task_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(id, reason) of those tasks whose cancel was asked for (perhaps on another node)."""
    rows = session.execute(
        select(Task.id, Task.cancel_reason).where(
            Task.id.in_(list(task_ids)), Task.cancel_requested.is_(True)
        )
    )
    return [(str(task_id), str(reason)) for task_id, reason in rows]


def mark_warnings(session: Session, task_id: str) -> None:
    """Record that the task wrote a warning (it ends "success with warnings")."""
    session.execute(
        update(Task)
        .where(Task.id == task_id, Task.has_warnings.is_(False))
        .values(has_warnings=True)
        .execution_options(synchronize_session=False)
    )
