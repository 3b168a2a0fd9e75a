"""A cancel the script engine cannot deliver is kept in the store with the target's outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.scripts import ScriptRequest, ScriptStatus
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.script_tasks import ScriptTasks, ScriptTaskSettings
from cuttle.server.engine.transactions import Transactions
from cuttle.server.errors import NotFound, Unreachable
from cuttle.server.store import pending_cancels, tasks
from cuttle.server.store.records import TaskRecord, now_ms
from tests.unit.server.machine_rows import add_machine

SETTINGS = ScriptTaskSettings(agent_lost_after=0.05, cancel_retry_interval=30.0)


class _Agent:
    """Stands in for a TentacleClient that is away, or that never heard of the ticket."""

    def __init__(self, name: str, *, away: bool) -> None:
        self.name = name
        self.away = away
        self.calls: list[str] = []

    def _answer(self, call: str, ticket: str) -> None:
        self.calls.append(call)
        if self.away:
            raise Unreachable(self.name, "timed out")
        raise NotFound(f"{self.name}: unknown ticket {ticket!r}")

    async def cancel_script(self, ticket: str, reason: str) -> ScriptStatus:
        self._answer("cancel", ticket)
        raise AssertionError("unreachable")

    async def watch_script(
        self, ticket: str, after_sequence: int = 0, *, start: ScriptRequest | None = None
    ) -> AsyncIterator[ScriptStatus]:
        # The engine starts a script through its watch.
        self._answer("start" if start is not None else "watch", ticket)
        raise AssertionError("unreachable")
        yield  # an async generator, as the real one


class _Connections:
    def __init__(self, agent: _Agent) -> None:
        self.agent = agent

    def connected(self, name: str) -> bool | None:
        return None

    def client(self, name: str) -> Any:
        return self.agent


def _running_task(sessions: sessionmaker[Session], *, cancel: bool) -> TaskRecord:
    """A task a previous server process was running (and maybe cancelling) on web-01."""
    with sessions.begin() as session:
        add_machine(session, "web-01", style="listening", endpoint="127.0.0.1:1")
        task = tasks.create_script_task(
            session,
            description="t",
            spec={"syntax": "bash", "body": "sleep 300"},
            machine_names=["web-01"],
        )
        tasks.set_state(session, task.id, "running")
        if cancel:
            tasks.request_cancel(session, task.id, "stop it")
        return tasks.get(session, task.id)


def _resume(sessions: sessionmaker[Session], agent: _Agent, task_id: str) -> TaskRecord:
    """Resume the task as a restarted server does and wait until it is finished."""
    tx = Transactions(sessions)
    signals = TaskSignals()

    async def run() -> TaskRecord:
        scripts = ScriptTasks(tx, _Connections(agent), signals, SETTINGS)
        try:
            assert await scripts.resume() == 1
            async with asyncio.timeout(20):
                while (task := await tx.read(lambda s: tasks.get(s, task_id))).state == "running":
                    await signals.wait(task_id, 1.0)
            return task
        finally:
            await scripts.stop()

    try:
        return asyncio.run(run())
    finally:
        tx.close()


def test_an_undeliverable_cancel_is_kept_and_the_target_says_so(
    sessions: sessionmaker[Session],
) -> None:
    task = _running_task(sessions, cancel=True)
    agent = _Agent("web-01", away=True)
    before = now_ms()
    finished = _resume(sessions, agent, task.id)

    assert finished.state == "cancelled"
    (target,) = finished.targets
    # Whether the script died is unknown until the agent confirms: not "cancelled".
    assert target.state == "result_unknown"
    assert "lost contact with web-01" in target.message
    assert "the cancel is kept and will be delivered when web-01 is back" in target.message
    # Nothing but cancels was asked: a cancelled script is never started.
    assert set(agent.calls) == {"cancel"}
    with sessions() as session:
        (kept,) = pending_cancels.list_pending(session)
    assert (kept.ticket, kept.machine_name, kept.task_id, kept.reason) == (
        target.ticket,
        "web-01",
        task.id,
        "stop it",
    )
    assert before + 30_000 <= kept.next_attempt_ms <= now_ms() + 30_000


def test_a_lost_agent_without_a_cancel_leaves_nothing_pending(
    sessions: sessionmaker[Session],
) -> None:
    task = _running_task(sessions, cancel=False)
    finished = _resume(sessions, _Agent("web-01", away=True), task.id)

    (target,) = finished.targets
    assert (finished.state, target.state) == ("failed", "result_unknown")
    assert "will be delivered" not in target.message
    with sessions() as session:
        assert pending_cancels.list_pending(session) == []


def test_a_cancel_for_a_ticket_the_agent_does_not_know_ends_without_starting_it(
    sessions: sessionmaker[Session],
) -> None:
    task = _running_task(sessions, cancel=True)
    agent = _Agent("web-01", away=False)
    finished = _resume(sessions, agent, task.id)

    (target,) = finished.targets
    assert (finished.state, target.state) == ("cancelled", "cancelled")
    assert "does not know the script" in target.message
    assert agent.calls == ["cancel"]
    with sessions() as session:
        assert pending_cancels.list_pending(session) == []
