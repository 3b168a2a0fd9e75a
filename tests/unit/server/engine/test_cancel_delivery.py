"""Pending cancels against a real store: delivered when the agent answers, kept while it cannot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.scripts import LogRun, ScriptStatus
from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.engine.cancel_delivery import (
    CancelDelivery,
    CancelDeliverySettings,
    retry_delay_ms,
)
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.errors import NotFound, UnknownTicket, Unreachable
from cuttle.server.store import pending_cancels, task_log, tasks
from cuttle.server.store.records import now_ms
from cuttle.server.store.transactions import Transactions
from tests.unit.server.machine_rows import add_machine

SETTINGS = CancelDeliverySettings(retry_interval=30.0, max_retry_interval=100.0)

SPEC = ScriptTaskSpec(syntax="bash", body="true")


def _status(
    ticket: str,
    state: str,
    exit_code: int = -1,
    runs: tuple[LogRun, ...] = (),
    more: bool = False,
) -> ScriptStatus:
    last = runs[-1].last_sequence if runs else 0
    return ScriptStatus(ticket, state, exit_code, runs, last, more, (), (), "", "")


def _line(sequence: int, text: str) -> LogRun:
    return LogRun(sequence, 1_700_000_000_000 + sequence, 1, 1, text.encode(), 1)


class _Agent:
    """Stands in for a TentacleClient: kills a script it knows, or fails as an away agent does."""

    def __init__(self, name: str, tickets: dict[str, str]) -> None:
        self.name = name
        # ticket -> the state a cancel finds the script in ("running": it is killed).
        self.tickets = dict(tickets)
        self.up = True
        self.calls: list[tuple[str, str]] = []
        # ticket -> its journal, one line per run; a status returns at most `page` runs.
        self.journals: dict[str, list[LogRun]] = {}
        self.page = 2
        self.status_fails = False

    async def cancel_script(self, ticket: str, reason: str) -> ScriptStatus:
        self.calls.append(("cancel", ticket))
        if not self.up:
            raise Unreachable(self.name, "connection refused")
        if ticket not in self.tickets:
            raise UnknownTicket(self.name, f"unknown ticket {ticket!r}")
        if self.tickets[ticket] == "running":
            self.tickets[ticket] = "cancelled"
        state = self.tickets[ticket]
        return _status(ticket, state, 0 if state == "complete" else -1)

    async def get_status(self, ticket: str, after_sequence: int = 0) -> ScriptStatus:
        self.calls.append(("status", ticket))
        if self.status_fails:
            raise Unreachable(self.name, "connection reset")
        rest = [r for r in self.journals.get(ticket, []) if r.sequence > after_sequence]
        runs = tuple(rest[: self.page])
        return _status(ticket, self.tickets[ticket], -1, runs, len(rest) > self.page)

    async def complete_script(self, ticket: str) -> ScriptStatus:
        self.calls.append(("complete", ticket))
        return _status(ticket, self.tickets.pop(ticket))


class _Connections:
    """What CancelDelivery asks of Connections: a client, and whether a polling one is there."""

    def __init__(self, *agents: _Agent) -> None:
        self.agents = {a.name: a for a in agents}
        self.polling_connected: dict[str, bool] = {}

    def connected(self, name: str) -> bool | None:
        return self.polling_connected.get(name)

    async def client(self, name: str) -> Any:
        if name not in self.agents:
            raise NotFound(f"no machine named {name!r} is registered")
        return self.agents[name]


def _pending_task(sessions: sessionmaker[Session], machines: list[str]) -> tuple[str, list[str]]:
    """A task whose targets ended result_unknown with their cancels pending and due now."""
    with sessions.begin() as session:
        for name in machines:
            add_machine(session, name)
        task = tasks.create_script_task(session, description="t", spec=SPEC, machine_names=machines)
        for target in task.targets:
            tasks.update_run(
                session,
                target.ticket,
                state="result_unknown",
                exit_code=-1,
                message="lost contact; the cancel will be delivered",
            )
            pending_cancels.add(
                session,
                ticket=target.ticket,
                machine_name=target.machine_name,
                task_id=task.id,
                reason="stop it",
                next_attempt_ms=now_ms(),
            )
    return task.id, [t.ticket for t in task.targets]


def _run(delivery: CancelDelivery, tx: Transactions) -> float:
    try:
        return asyncio.run(delivery.deliver_due())
    finally:
        tx.close()


def test_a_cancel_is_delivered_then_the_workspace_cleaned_and_the_record_removed(
    sessions: sessionmaker[Session],
) -> None:
    task_id, (killed, finished) = _pending_task(sessions, ["web-01", "web-02"])
    agents = [_Agent("web-01", {killed: "running"}), _Agent("web-02", {finished: "complete"})]
    tx = Transactions(sessions)
    _run(CancelDelivery(tx, _Connections(*agents), TaskSignals(), SETTINGS), tx)

    assert agents[0].calls == [("cancel", killed), ("status", killed), ("complete", killed)]
    assert agents[1].calls == [("cancel", finished), ("status", finished), ("complete", finished)]
    assert agents[0].tickets == agents[1].tickets == {}
    with sessions() as session:
        assert pending_cancels.list_pending(session) == []
        task = tasks.get(session, task_id)
    by_machine = {t.machine_name: t for t in task.targets}
    # The state stays what it was; the message tells what the agent answered.
    assert {t.state for t in task.targets} == {"result_unknown"}
    assert by_machine["web-01"].message == (
        "the cancel was delivered when web-01 was back: the script was killed"
    )
    assert by_machine["web-02"].message == (
        "the cancel was delivered when web-02 was back: "
        "the script had already ended (complete, exit code 0)"
    )


def test_an_away_agent_keeps_the_record_with_backoff_and_a_reason(
    sessions: sessionmaker[Session],
) -> None:
    _, (ticket,) = _pending_task(sessions, ["web-01"])
    agent = _Agent("web-01", {ticket: "running"})
    agent.up = False
    tx = Transactions(sessions)
    delivery = CancelDelivery(tx, _Connections(agent), TaskSignals(), SETTINGS)
    before = now_ms()

    async def rounds() -> tuple[float, float]:
        first = await delivery.deliver_due()
        # Not due again yet: the second round asks nothing.
        second = await delivery.deliver_due()
        return first, second

    try:
        first, second = asyncio.run(rounds())
    finally:
        tx.close()

    assert agent.calls == [("cancel", ticket)]
    with sessions() as session:
        (kept,) = pending_cancels.list_pending(session)
    assert kept.attempts == 1
    assert "connection refused" in kept.last_error
    assert before + 30_000 <= kept.next_attempt_ms <= now_ms() + 30_000
    assert 25 < second <= 30
    assert first <= 30


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert [retry_delay_ms(SETTINGS, n) for n in (1, 2, 3, 4, 100)] == [
        30_000,
        60_000,
        100_000,
        100_000,
        100_000,
    ]


def test_a_disconnected_polling_machine_costs_no_attempt(
    sessions: sessionmaker[Session],
) -> None:
    _, (ticket,) = _pending_task(sessions, ["web-01"])
    agent = _Agent("web-01", {ticket: "running"})
    connections = _Connections(agent)
    connections.polling_connected["web-01"] = False
    tx = Transactions(sessions)
    wait = _run(CancelDelivery(tx, connections, TaskSignals(), SETTINGS), tx)

    assert agent.calls == []
    with sessions() as session:
        (kept,) = pending_cancels.list_pending(session)
    assert (kept.attempts, kept.last_attempt_ms) == (0, None)
    # Looked at again after the interval, when it may have connected.
    assert wait == pytest.approx(30, abs=1)


def test_an_agent_that_lost_the_ticket_drops_the_record(
    sessions: sessionmaker[Session],
) -> None:
    task_id, (ticket,) = _pending_task(sessions, ["web-01"])
    agent = _Agent("web-01", {})
    tx = Transactions(sessions)
    _run(CancelDelivery(tx, _Connections(agent), TaskSignals(), SETTINGS), tx)

    assert agent.calls == [("cancel", ticket)]
    with sessions() as session:
        assert pending_cancels.list_pending(session) == []
        (target,) = tasks.get(session, task_id).targets
    assert "no longer knew the script" in target.message


def test_a_machine_this_node_does_not_know_keeps_its_record(
    sessions: sessionmaker[Session],
) -> None:
    _pending_task(sessions, ["web-01"])
    tx = Transactions(sessions)
    _run(CancelDelivery(tx, _Connections(), TaskSignals(), SETTINGS), tx)

    with sessions() as session:
        (kept,) = pending_cancels.list_pending(session)
    # The store says when a machine is gone (removing it removes the record), not comms.
    assert "no machine named" in kept.last_error


def test_started_delivery_finds_what_the_store_kept_and_stops(
    sessions: sessionmaker[Session],
) -> None:
    task_id, (ticket,) = _pending_task(sessions, ["web-01"])
    agent = _Agent("web-01", {ticket: "running"})
    tx = Transactions(sessions)
    signals = TaskSignals()

    async def run() -> int:
        delivery = CancelDelivery(tx, _Connections(agent), signals, SETTINGS)
        with signals.subscribe(task_id) as changes:
            loaded = await delivery.start()
            try:
                async with asyncio.timeout(10):
                    while True:
                        seen = changes.version
                        if not await tx.read(pending_cancels.count):
                            break
                        # Delivery wakes the task's followers; one that came before the wait
                        # began is counted in the version, so none is missed.
                        await changes.wait_past(seen, 60)
            finally:
                await delivery.stop()
        return loaded

    try:
        assert asyncio.run(run()) == 1
    finally:
        tx.close()
    assert agent.calls == [("cancel", ticket), ("status", ticket), ("complete", ticket)]


def test_no_more_than_max_in_flight_are_tried_at_once(sessions: sessionmaker[Session]) -> None:
    _, tickets = _pending_task(sessions, ["web-01", "web-02"])
    agents = [_Agent("web-01", {tickets[0]: "running"}), _Agent("web-02", {tickets[1]: "running"})]
    tx = Transactions(sessions)
    settings = CancelDeliverySettings(retry_interval=30.0, max_in_flight=1)
    delivery = CancelDelivery(tx, _Connections(*agents), TaskSignals(), settings)

    async def rounds() -> list[int]:
        remaining = []
        for _ in range(2):
            await delivery.deliver_due()
            remaining.append(await tx.read(pending_cancels.count))
        return remaining

    try:
        assert asyncio.run(rounds()) == [1, 0]
    finally:
        tx.close()


def test_output_written_while_the_cancel_was_pending_is_stored_before_the_cleanup(
    sessions: sessionmaker[Session],
) -> None:
    task_id, (ticket,) = _pending_task(sessions, ["web-01"])
    with sessions.begin() as session:
        # The server followed the script up to line 2 before it lost the agent.
        task_log.append_runs(
            session,
            ticket,
            [LogRun(1, 1, 1, 1, b"one"), LogRun(2, 2, 1, 1, b"two")],
        )
    agent = _Agent("web-01", {ticket: "running"})
    agent.journals[ticket] = [
        _line(n, text)
        for n, text in enumerate(
            ["one", "two", "three", "four", "five", "The script was cancelled: stop it"], 1
        )
    ]
    tx = Transactions(sessions)
    _run(CancelDelivery(tx, _Connections(agent), TaskSignals(), SETTINGS), tx)

    # Paged (two runs a reply here) until the agent had no more, then the cleanup.
    assert agent.calls == [
        ("cancel", ticket),
        ("status", ticket),
        ("status", ticket),
        ("complete", ticket),
    ]
    with sessions() as session:
        lines = task_log.read_lines(session, task_id)
        (target,) = tasks.get(session, task_id).targets
    assert [line.text for line in lines] == [
        b"one",
        b"two",
        b"three",
        b"four",
        b"five",
        b"The script was cancelled: stop it",
    ]
    assert target.last_sequence == 6
    assert target.message == (
        "the cancel was delivered when web-01 was back: the script was killed; "
        "4 more line(s) of its output were added to the log"
    )


def test_output_that_cannot_be_fetched_keeps_the_record_and_the_workspace(
    sessions: sessionmaker[Session],
) -> None:
    task_id, (ticket,) = _pending_task(sessions, ["web-01"])
    agent = _Agent("web-01", {ticket: "running"})
    agent.journals[ticket] = [_line(1, "written while away")]
    agent.status_fails = True
    tx = Transactions(sessions)
    delivery = CancelDelivery(tx, _Connections(agent), TaskSignals(), SETTINGS)
    try:
        asyncio.run(delivery.deliver_due())
        with sessions() as session:
            (kept,) = pending_cancels.list_pending(session)
        # Killed, but the journal is still on the agent: no cleanup until it is stored.
        assert agent.calls == [("cancel", ticket), ("status", ticket)]
        assert "could not fetch the script's output" in kept.last_error
        assert "connection reset" in kept.last_error

        # The next attempt finds the script dead already, stores the line, then cleans up.
        agent.status_fails = False
        with sessions.begin() as session:
            pending_cancels.claim(
                session,
                ticket,
                expected_next_ms=kept.next_attempt_ms,
                next_attempt_ms=now_ms(),
                at_ms=now_ms(),
            )
        asyncio.run(delivery.deliver_due())
    finally:
        tx.close()
    with sessions() as session:
        assert pending_cancels.list_pending(session) == []
        assert [line.text for line in task_log.read_lines(session, task_id)] == [
            b"written while away"
        ]
    assert agent.calls[-1] == ("complete", ticket)
