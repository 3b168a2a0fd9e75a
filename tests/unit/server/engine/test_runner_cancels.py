"""A cancel the task runner cannot deliver is kept in the store with the run's outcome, at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.scripts import ScriptRequest, ScriptStatus
from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.runner import TaskRunner
from cuttle.server.engine.script_run import RunSettings
from cuttle.server.errors import UnknownTicket, Unreachable
from cuttle.server.store import pending_cancels, tasks
from cuttle.server.store.records import TaskRecord, now_ms
from cuttle.server.store.transactions import Transactions
from tests.unit.server.machine_rows import add_machine

SETTINGS = RunSettings(agent_lost_after=0.05, cancel_retry_interval=30.0)
# A cancel must not wait for the agent to count as lost: with this, waiting would time out.
PATIENT = RunSettings(agent_lost_after=600.0, cancel_retry_interval=30.0)


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
        raise UnknownTicket(self.name, f"unknown ticket {ticket!r}")

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

    async def client(self, name: str) -> Any:
        return self.agent


def _running_task(sessions: sessionmaker[Session], *, cancel: bool) -> TaskRecord:
    """A task a previous server process was running (and maybe cancelling) on web-01."""
    with sessions.begin() as session:
        add_machine(session, "web-01", style="listening", endpoint="127.0.0.1:1")
        task = tasks.create_script_task(
            session,
            description="t",
            spec=ScriptTaskSpec(syntax="bash", body="sleep 300"),
            machine_names=["web-01"],
        )
        tasks.set_state(session, task.id, "running")
        if cancel:
            tasks.request_cancel(session, task.id, "stop it")
        return tasks.get(session, task.id)


def _resume(
    sessions: sessionmaker[Session],
    agent: Any,
    task_id: str,
    settings: RunSettings = SETTINGS,
) -> TaskRecord:
    """Resume the task as a restarted server does and wait until it is finished."""
    tx = Transactions(sessions)
    signals = TaskSignals()

    async def run() -> TaskRecord:
        runner = TaskRunner(tx, _Connections(agent), signals, settings)
        try:
            with signals.subscribe(task_id) as changes:
                assert await runner.resume() == 1
                async with asyncio.timeout(20):
                    while True:
                        seen = changes.version
                        task = await tx.read(lambda s: tasks.get(s, task_id))
                        if task.state not in ("running", "cancelling"):
                            return task
                        # A change after `seen` wakes this at once; no poll needed.
                        await changes.wait_past(seen, 60)
        finally:
            await runner.stop()

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
    finished = _resume(sessions, agent, task.id, PATIENT)

    assert finished.state == "cancelled"
    (target,) = finished.targets
    # Whether the script died is unknown until the agent confirms: not "cancelled".
    assert target.state == "result_unknown"
    assert "could not reach web-01 to cancel" in target.message
    assert "cancel pending: it will be delivered when web-01 is back" in target.message
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
    # It was running when the server restarted: never an invitation to run it again.
    assert "may have run on web-01" in target.message
    assert "safe to retry" not in target.message
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


class _Survivor:
    """An agent whose kill left a process of the tree alive: it answers result_unknown."""

    def __init__(self) -> None:
        self.machine = "web-01"
        self.calls: list[str] = []

    def _status(self, ticket: str) -> ScriptStatus:
        reason = "stop it; but processes 4242 of the script survived SIGKILL and may still run"
        return ScriptStatus(
            ticket=ticket,
            state="result_unknown",
            exit_code=-9,
            runs=(),
            last_sequence=0,
            more_lines=False,
            output_variables=(),
            artifacts=(),
            failure_message="",
            state_reason=reason,
        )

    async def cancel_script(self, ticket: str, reason: str) -> ScriptStatus:
        self.calls.append("cancel")
        return self._status(ticket)

    async def watch_script(
        self, ticket: str, after_sequence: int = 0, *, start: ScriptRequest | None = None
    ) -> AsyncIterator[ScriptStatus]:
        self.calls.append("watch")
        yield self._status(ticket)

    async def complete_scripts(self, tickets: list[str]) -> list[str]:
        self.calls.append("complete")
        return []

    async def complete_script(self, ticket: str) -> ScriptStatus:
        self.calls.append("complete")
        return self._status(ticket)


def test_a_cancel_the_agent_could_not_finish_leaves_the_task_failed_not_cancelled(
    sessions: sessionmaker[Session],
) -> None:
    task = _running_task(sessions, cancel=True)
    agent = _Survivor()
    finished = _resume(sessions, agent, task.id)

    (target,) = finished.targets
    # "Cancelled" would say nothing runs on; the agent saw a process outlive SIGKILL.
    assert (finished.state, target.state) == ("failed", "result_unknown")
    assert "survived SIGKILL" in target.message
    assert agent.calls[0] == "cancel"
