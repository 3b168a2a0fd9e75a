"""Tasks: creation with their trees, listing, guarded state changes, claims, cancellation."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.scripts import Artifact
from cuttle.server.domain.scripts import RemoteVariable as OutputVariable
from cuttle.server.domain.task_specs import ScriptTaskSpec, SpecVariable
from cuttle.server.store import tasks
from cuttle.server.store.errors import Conflict, InvalidArgument, NotFound
from cuttle.server.store.models import Task
from cuttle.server.store.records import TaskRecord

SPEC = ScriptTaskSpec(
    syntax="bash",
    body="echo hello",
    timeout_seconds=600,
    variables=(SpecVariable(name="Greeting", value="hello"),),
)


def _ticket(task: TaskRecord, machine: str) -> str:
    """The ticket of the machine's (first) script run."""
    return next(t.ticket for t in task.targets if t.machine_name == machine)


def new_task(
    session: Session, created_ms: int = 1_000, machines: tuple[str, ...] = ("Web-1", "Web-2")
) -> TaskRecord:
    return tasks.create_script_task(
        session,
        description="Run a script",
        spec=SPEC,
        machine_names=machines,
        created_ms=created_ms,
    )


def test_create_queues_the_task_with_a_pending_target_per_machine(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        created = new_task(session)
    with sessions.begin() as session:
        fetched = tasks.get(session, created.id)
    assert fetched == created
    assert fetched.state == "queued"
    assert fetched.kind == "script"
    assert fetched.spec == SPEC
    assert fetched.log_count == 0
    assert [t.machine_name for t in fetched.targets] == ["Web-1", "Web-2"]
    assert all(t.state == "pending" and t.last_sequence == 0 for t in fetched.targets)
    # The tree: one step, one action, a machine node per machine, each with its first run.
    assert [(n.kind, n.name, n.state) for n in fetched.nodes] == [
        ("step", "Run script", "pending"),
        ("action", "Run script", "pending"),
        ("machine", "Web-1", "pending"),
        ("machine", "Web-2", "pending"),
    ]
    step, action, web1, web2 = fetched.nodes
    assert (action.parent_id, web1.parent_id, web2.parent_id) == (step.id, action.id, action.id)
    assert [r.attempt for r in web1.runs] == [1]
    assert len({t.ticket for t in fetched.targets}) == 2


def test_create_refuses_no_or_repeated_machines(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        with pytest.raises(InvalidArgument):
            new_task(session, machines=())
        with pytest.raises(InvalidArgument, match="twice"):
            new_task(session, machines=("Web-1", "web-1"))


def test_unknown_task_is_not_found(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session, pytest.raises(NotFound, match="task 'missing'"):
        tasks.get(session, "missing")


def test_list_is_newest_first_and_pages(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        # Two per millisecond: the id must break the tie without skipping or repeating.
        created = [new_task(session, created_ms=1_000 + n // 2) for n in range(7)]
    expected = [t.id for t in sorted(created, key=lambda t: (t.created_ms, t.id), reverse=True)]
    seen: list[str] = []
    token: str | None = None
    with sessions.begin() as session:
        while True:
            page = tasks.list_tasks(session, page_size=3, page_token=token)
            seen.extend(t.id for t in page.items)
            token = page.next_page_token
            if token is None:
                break
    assert seen == expected


def test_list_by_state(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        queued = new_task(session)
        running = new_task(session)
        tasks.set_state(session, running.id, "running", at_ms=5)
    with sessions.begin() as session:
        page = tasks.list_tasks(session, states=["running"])
    assert [t.id for t in page.items] == [running.id]
    assert queued.id != running.id


def test_list_by_starter_age_and_a_filter_fills_whole_pages(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        made = [
            tasks.create_script_task(
                session,
                description=f"task {n}",
                spec=SPEC,
                machine_names=("Web-1",),
                created_ms=1_000 + n,
                started_by="Alice" if n % 2 else "bob",
            )
            for n in range(9)
        ]
    alices = [t.id for t in reversed(made) if t.started_by == "Alice"]
    with sessions.begin() as session:
        by_alice = tasks.list_tasks(session, started_by="alice")
        recent = tasks.list_tasks(session, since_ms=1_007)
    assert [t.id for t in by_alice.items] == alices
    assert [t.id for t in recent.items] == [made[8].id, made[7].id]
    # A filter that keeps every other task still gives full pages, and pages without repeats.
    seen: list[str] = []
    token: str | None = None
    with sessions.begin() as session:
        while True:
            page = tasks.list_tasks(
                session, keep=lambda t: t.started_by == "bob", page_size=2, page_token=token
            )
            assert len(page.items) == 2 or page.next_page_token is None
            seen.extend(t.id for t in page.items)
            token = page.next_page_token
            if token is None:
                break
    assert seen == [t.id for t in reversed(made) if t.started_by == "bob"]


def test_a_task_is_found_by_any_unique_prefix_of_its_id(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        first = tasks.create_task(session, description="a", spec=SPEC, plan=[])
        second = tasks.create_task(session, description="b", spec=SPEC, plan=[])
        # Ids are random: give the two a known shared beginning (no nodes refer to them).
        for row_id, new_id in ((first.id, "abc1" + "0" * 28), (second.id, "abc2" + "0" * 28)):
            session.execute(update(Task).where(Task.id == row_id).values(id=new_id))
    with sessions.begin() as session:
        assert tasks.resolve_id(session, "abc1") == "abc1" + "0" * 28
        assert tasks.resolve_id(session, "ABC2") == "abc2" + "0" * 28
        assert tasks.resolve_id(session, "abc1" + "0" * 28) == "abc1" + "0" * 28
        with pytest.raises(InvalidArgument, match="matches several tasks: abc1"):
            tasks.resolve_id(session, "abc")
        with pytest.raises(NotFound):
            tasks.resolve_id(session, "abd")
        # Not hex: no LIKE pattern is ever built from it.
        with pytest.raises(NotFound):
            tasks.resolve_id(session, "ab%")
        with pytest.raises(InvalidArgument):
            tasks.resolve_id(session, " ")


def test_bad_page_token_is_invalid(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session, pytest.raises(InvalidArgument, match="page token"):
        tasks.list_tasks(session, page_token="garbage")


def test_state_changes_are_guarded(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        task = new_task(session)
    with sessions.begin() as session:
        running = tasks.set_state(session, task.id, "running", expected=["queued"], at_ms=10)
        # Resuming: running again keeps the first start.
        resumed = tasks.set_state(session, task.id, "running", expected=["running"], at_ms=20)
        done = tasks.set_state(session, task.id, "success", at_ms=30)
    assert (running.state, running.started_ms) == ("running", 10)
    assert resumed.started_ms == 10
    assert (done.state, done.finished_ms) == ("success", 30)
    with sessions.begin() as session, pytest.raises(Conflict, match="is success"):
        tasks.set_state(session, task.id, "failed")
    with sessions.begin() as session, pytest.raises(NotFound):
        tasks.set_state(session, "missing", "failed")


def test_claim_next_queued_takes_the_oldest_once(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        newer = new_task(session, created_ms=2_000)
        older = new_task(session, created_ms=1_000)
    with sessions.begin() as session:
        first = tasks.claim_next_queued(session, "node-a", at_ms=50)
        second = tasks.claim_next_queued(session, "node-b", at_ms=60)
        third = tasks.claim_next_queued(session, "node-a", at_ms=70)
    assert first is not None
    assert second is not None
    assert (first.id, first.owner_node, first.state, first.started_ms) == (
        older.id,
        "node-a",
        "running",
        50,
    )
    assert (second.id, second.owner_node) == (newer.id, "node-b")
    assert third is None


def test_claim_for_resumption_checks_the_previous_owner(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        new_task(session)
        claimed = tasks.claim_next_queued(session, "node-a")
    assert claimed is not None
    with sessions.begin() as session:
        unfinished = tasks.unfinished_tasks(session, owner_node="node-a")
        taken = tasks.claim(session, claimed.id, "node-b", previous_owner="node-a")
    assert [t.id for t in unfinished] == [claimed.id]
    assert taken.owner_node == "node-b"
    # node-c read the owner before node-b took it: its claim must lose.
    with sessions.begin() as session, pytest.raises(Conflict, match="node-b"):
        tasks.claim(session, claimed.id, "node-c", previous_owner="node-a")


def test_unfinished_tasks_are_queued_and_running(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        queued = new_task(session, created_ms=1)
        running = new_task(session, created_ms=2)
        finished = new_task(session, created_ms=3)
        tasks.set_state(session, running.id, "running")
        tasks.set_state(session, finished.id, "running")
        tasks.set_state(session, finished.id, "failed")
    with sessions.begin() as session:
        assert [t.id for t in tasks.unfinished_tasks(session)] == [queued.id, running.id]


def test_cancel_queued_task_cancels_it_at_once(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        task = new_task(session)
    with sessions.begin() as session:
        cancelled = tasks.request_cancel(session, task.id, "user: alice", at_ms=99)
    assert (cancelled.state, cancelled.finished_ms) == ("cancelled", 99)
    assert cancelled.cancel_requested
    assert cancelled.cancel_reason == "user: alice"


def test_cancel_running_task_flags_it_and_keeps_the_first_reason(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        task = new_task(session)
        tasks.set_state(session, task.id, "running")
    with sessions.begin() as session:
        tasks.request_cancel(session, task.id, "user: alice")
        flagged = tasks.request_cancel(session, task.id, "shutdown")
    assert (flagged.state, flagged.cancel_requested) == ("cancelling", True)
    assert flagged.cancel_reason == "user: alice"
    with sessions.begin() as session:
        tasks.set_state(session, task.id, "cancelled")
        after = tasks.request_cancel(session, task.id, "again")
    assert after.state == "cancelled"


def test_target_results_and_ticket_lookup(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        task = new_task(session)
    ticket = task.targets[0].ticket
    with sessions.begin() as session:
        tasks.update_run(session, ticket, state="running")
        done = tasks.update_run(
            session,
            ticket,
            state="complete",
            exit_code=0,
            message="",
            output_variables=[
                OutputVariable("Healthy", "True", sensitive=False),
                OutputVariable("Password", "********", sensitive=True),
            ],
            artifacts=[Artifact("report.txt", "artifacts/report.txt", 12, "ab" * 32)],
            at_ms=77,
        )
    with sessions.begin() as session:
        by_ticket = tasks.get_run(session, ticket)
        with pytest.raises(NotFound, match="ticket 'nope'"):
            tasks.get_run(session, "nope")
        # A late "running" must not reopen a finished script.
        with pytest.raises(Conflict, match="complete"):
            tasks.update_run(session, ticket, state="running")
        node = tasks.get_node(session, by_ticket.node_id)
    assert by_ticket == done
    assert (done.state, done.exit_code, done.finished_ms) == ("complete", 0, 77)
    assert done.output_variables[1] == OutputVariable("Password", "********", True)
    assert done.artifacts[0].path == "artifacts/report.txt"
    # The machine node follows its run, in the deployment's words.
    assert (node.state, node.ended_ms) == ("success", 77)


def test_an_update_returns_the_node_as_a_later_read_finds_it(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        task = new_task(session)
    first = task.targets[0]
    with sessions.begin() as session:
        pending = tasks.update_run_and_node(session, first.ticket, state="pending")
        failed = tasks.update_run_and_node(
            session, first.ticket, state="complete", exit_code=3, message="exit 3", at_ms=90
        )
    with sessions.begin() as session:
        stored = tasks.get_node(session, first.node_id)
        run = tasks.get_run(session, first.ticket)
    # A pending run leaves its node alone; any other state moves it, as update_run says.
    assert pending.node is None
    assert failed.run == run
    assert failed.node is not None
    assert failed.node == dataclasses.replace(stored, runs=())
    assert (failed.node.state, failed.node.reason, failed.node.ended_ms) == ("failed", "exit 3", 90)


def test_node_states_reads_many_nodes_at_once(sessions: sessionmaker[Session]) -> None:
    machines = tuple(f"Web-{k}" for k in range(1203))
    with sessions.begin() as session:
        task = new_task(session, machines=machines)
        done = task.targets[7]
        tasks.update_run(session, done.ticket, state="complete", exit_code=0)
    ids = [n.id for n in task.nodes]
    with sessions.begin() as session:
        states = tasks.node_states(session, ids)
        with pytest.raises(NotFound, match="nope"):
            tasks.node_states(session, [ids[0], "nope"])
    # More ids than one IN list takes: every one answered, as the tree says.
    assert len(states) == len(ids)
    assert states[done.node_id] == "success"
    assert sum(1 for s in states.values() if s == "pending") == len(ids) - 1


def test_a_retry_is_a_new_run_of_the_same_machine_node(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        task = new_task(session)
    first = task.targets[0]
    with sessions.begin() as session:
        tasks.update_run(session, first.ticket, state="complete", exit_code=1, message="exit 1")
        failed = tasks.get_node(session, first.node_id)
        retry = tasks.add_run(session, first.node_id)
        tasks.update_run(session, retry.ticket, state="running")
        running = tasks.get_node(session, first.node_id)
    assert (failed.state, failed.reason) == ("failed", "exit 1")
    assert (retry.attempt, retry.machine_name) == (2, first.machine_name)
    assert retry.ticket != first.ticket
    assert running.state == "running"
    assert [r.attempt for r in running.runs] == [1, 2]
    with sessions.begin() as session:
        target = tasks.get(session, task.id).targets[0]
    # The script console shows the latest run, and how many there were.
    assert (target.ticket, target.attempts) == (retry.ticket, 2)
