"""Pending cancels: kept per ticket, claimed by one node at a time, dropped with their machine."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.store import machines, pending_cancels, tasks
from tests.unit.server.machine_rows import add_machine

SPEC = ScriptTaskSpec(syntax="bash", body="true")


def _add(session: Session, ticket: str, machine: str, task_id: str, next_ms: int) -> object:
    return pending_cancels.add(
        session,
        ticket=ticket,
        machine_name=machine,
        task_id=task_id,
        reason="stop it",
        next_attempt_ms=next_ms,
        at_ms=1_000,
    )


def test_add_list_and_remove(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        add_machine(session, "Web-1")
        add_machine(session, "Web-2")
        task = tasks.create_script_task(
            session, description="a", spec=SPEC, machine_names=["Web-1", "Web-2"]
        )
        first = _add(session, "t1", "Web-1", task.id, 5_000)
        # The same ticket again keeps what was recorded first.
        assert _add(session, "t1", "Web-1", task.id, 9_000) == first
        _add(session, "t2", "Web-2", task.id, 6_000)
        # A machine that is not registered (any more) gets no record: nothing could reach it.
        assert _add(session, "t3", "Gone-1", task.id, 6_000) is None
    with sessions.begin() as session:
        listed = pending_cancels.list_pending(session)
        assert [(p.ticket, p.machine_name, p.next_attempt_ms) for p in listed] == [
            ("t1", "Web-1", 5_000),
            ("t2", "Web-2", 6_000),
        ]
        assert listed[0].reason == "stop it"
        assert (listed[0].attempts, listed[0].last_error, listed[0].recorded_ms) == (0, "", 1_000)
        assert [p.ticket for p in pending_cancels.list_pending(session, machine_name="web-2")] == [
            "t2"
        ]
        assert pending_cancels.list_pending(session, task_id="other") == []
        assert pending_cancels.count(session) == 2
    with sessions.begin() as session:
        removed = pending_cancels.remove(session, "t1")
        assert removed is not None
        assert removed.ticket == "t1"
    with sessions.begin() as session:
        # A second node finishing the same record learns that it was not the one.
        assert pending_cancels.remove(session, "t1") is None
        assert [p.ticket for p in pending_cancels.list_pending(session)] == ["t2"]


def test_due_records_are_claimed_once_and_postponed(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        add_machine(session, "Web-1")
        _add(session, "t1", "Web-1", "task", 5_000)
        _add(session, "t2", "Web-1", "task", 6_000)
        _add(session, "t3", "Web-1", "task", 90_000)
    with sessions.begin() as session:
        due = pending_cancels.due(session, at_ms=10_000, limit=10)
        assert [p.ticket for p in due] == ["t1", "t2"]
        assert [p.ticket for p in pending_cancels.due(session, at_ms=10_000, limit=1)] == ["t1"]
        assert [
            p.ticket for p in pending_cancels.due(session, at_ms=10_000, limit=10, exclude={"t1"})
        ] == ["t2"]
        assert pending_cancels.next_due_ms(session) == 5_000
        assert pending_cancels.next_due_ms(session, exclude={"t1", "t2"}) == 90_000
    with sessions.begin() as session:
        claimed = pending_cancels.claim(
            session, "t1", expected_next_ms=5_000, next_attempt_ms=20_000, at_ms=10_000
        )
        assert claimed is not None
        assert (claimed.attempts, claimed.last_attempt_ms, claimed.next_attempt_ms) == (
            1,
            10_000,
            20_000,
        )
    with sessions.begin() as session:
        # Another node read the same due record: its claim finds it moved and gets nothing.
        assert (
            pending_cancels.claim(
                session, "t1", expected_next_ms=5_000, next_attempt_ms=20_000, at_ms=10_000
            )
            is None
        )
        assert [p.ticket for p in pending_cancels.due(session, at_ms=10_000, limit=10)] == ["t2"]
        assert pending_cancels.postpone(
            session, "t2", next_attempt_ms=30_000, error="web-1 is unreachable"
        )
        assert not pending_cancels.postpone(session, "gone", next_attempt_ms=1, error="")
    with sessions.begin() as session:
        t2 = {p.ticket: p for p in pending_cancels.list_pending(session, task_id="task")}["t2"]
        assert (t2.ticket, t2.attempts, t2.last_error, t2.next_attempt_ms) == (
            "t2",
            0,
            "web-1 is unreachable",
            30_000,
        )
        assert pending_cancels.next_due_ms(session) == 20_000
    with sessions.begin() as session:
        for ticket in ("t1", "t2", "t3"):
            pending_cancels.remove(session, ticket)
        assert pending_cancels.next_due_ms(session) is None


def test_removing_a_machine_drops_its_pending_cancels(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        add_machine(session, "Web-1")
        add_machine(session, "Web-2")
        _add(session, "t1", "Web-1", "task", 5_000)
        _add(session, "t2", "Web-2", "task", 5_000)
    with sessions.begin() as session:
        machines.remove(session, "web-1")
    with sessions.begin() as session:
        assert [p.ticket for p in pending_cancels.list_pending(session)] == ["t2"]
