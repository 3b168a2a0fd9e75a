"""Completing tickets off the critical path: batched per machine, failures logged, stop drains."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from cuttle.server.engine.completions import TicketCompletions
from cuttle.server.errors import AgentRejected, Unreachable


class _Agent:
    """Stands in for a TentacleClient: records completions, can be slow, away, or old."""

    def __init__(
        self,
        *,
        away: bool = False,
        gate: asyncio.Event | None = None,
        machine: str = "web-01",
        old: bool = False,
    ) -> None:
        self.machine = machine
        self.away = away
        self.gate = gate
        self.old = old
        self.completed: list[str] = []
        self.calls: list[list[str]] = []
        self.changed = asyncio.Event()

    async def complete_script(self, ticket: str) -> Any:
        return await self.complete_scripts([ticket], single=True)

    async def complete_scripts(self, tickets: list[str], single: bool = False) -> list[str]:
        if self.gate is not None:
            await self.gate.wait()
        if self.away:
            raise Unreachable(self.machine, "timed out")
        if self.old and not single:
            raise AgentRejected(self.machine, "invalid_argument", "unknown method")
        if "refused" in tickets:
            raise AgentRejected(self.machine, "invalid_argument", "refused")
        self.calls.append(list(tickets))
        self.completed.extend(tickets)
        self.changed.set()
        return []


def test_submit_returns_before_the_agent_answers_and_stop_drains() -> None:
    async def scenario() -> list[str]:
        gate = asyncio.Event()
        agent = _Agent(gate=gate)
        completions = TicketCompletions()
        completions.start()
        for n in range(5):
            await completions.submit(agent, f"t{n}")  # type: ignore[arg-type]
        assert agent.completed == []  # nothing waited for the agent
        gate.set()
        await completions.stop(grace=5)
        return agent.completed

    assert asyncio.run(scenario()) == [f"t{n}" for n in range(5)]


def test_a_failed_completion_is_logged_and_the_next_still_goes() -> None:
    async def scenario() -> tuple[list[str], list[dict[str, Any]]]:
        away, here = _Agent(away=True), _Agent()
        completions = TicketCompletions()
        completions.start()
        with capture_logs() as logs:
            await completions.submit(away, "lost")  # type: ignore[arg-type]
            await completions.submit(here, "kept")  # type: ignore[arg-type]
            await completions.stop(grace=5)
        return here.completed, logs

    completed, logs = asyncio.run(scenario())
    assert completed == ["kept"]
    assert [e["event"] for e in logs] == ["complete_script_failed"]


def test_without_a_worker_a_completion_is_done_in_place() -> None:
    async def scenario() -> list[str]:
        agent = _Agent()
        await TicketCompletions().submit(agent, "t1")  # type: ignore[arg-type]
        return agent.completed

    assert asyncio.run(scenario()) == ["t1"]


def test_stop_gives_up_on_a_hung_agent_after_the_grace() -> None:
    async def scenario() -> None:
        completions = TicketCompletions()
        completions.start()
        await completions.submit(_Agent(gate=asyncio.Event()), "hung")  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            await completions.stop(grace=0.2)

    asyncio.run(scenario())


def test_tickets_that_arrive_together_go_in_one_call_per_machine() -> None:
    async def scenario() -> tuple[_Agent, _Agent]:
        web, db = _Agent(), _Agent(machine="db-01")
        completions = TicketCompletions(linger=0.2)
        completions.start()
        for n in range(4):
            await completions.submit(web, f"w{n}")  # type: ignore[arg-type]
            await completions.submit(db, f"d{n}")  # type: ignore[arg-type]
        await completions.stop(grace=5)
        return web, db

    web, db = asyncio.run(scenario())
    assert web.calls == [["w0", "w1", "w2", "w3"]]
    assert db.calls == [["d0", "d1", "d2", "d3"]]


def test_a_batch_is_bounded_and_a_lone_ticket_does_not_wait_for_company() -> None:
    async def scenario() -> tuple[_Agent, float]:
        agent = _Agent()
        completions = TicketCompletions(linger=0.05, batch_limit=3)
        completions.start()
        for n in range(7):
            await completions.submit(agent, f"t{n}")  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await completions.submit(agent, "alone")  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            while "alone" not in agent.completed:
                agent.changed.clear()
                await agent.changed.wait()
        waited = loop.time() - started
        await completions.stop(grace=5)
        return agent, waited

    agent, waited = asyncio.run(scenario())
    assert agent.completed == [*(f"t{n}" for n in range(7)), "alone"]
    assert all(len(call) <= 3 for call in agent.calls), agent.calls
    assert waited < 2, waited


def test_an_agent_without_complete_scripts_gets_them_one_by_one() -> None:
    async def scenario() -> tuple[_Agent, list[dict[str, Any]]]:
        agent = _Agent(old=True)
        completions = TicketCompletions(linger=0.2)
        completions.start()
        with capture_logs() as logs:
            for n in range(3):
                await completions.submit(agent, f"t{n}")  # type: ignore[arg-type]
            await completions.stop(grace=5)
        return agent, logs

    agent, logs = asyncio.run(scenario())
    assert agent.calls == [["t0"], ["t1"], ["t2"]]
    assert [e["event"] for e in logs] == ["complete_scripts_refused"]


def test_a_ticket_refused_one_by_one_does_not_stop_the_rest_of_its_batch() -> None:
    async def scenario() -> tuple[_Agent, list[dict[str, Any]]]:
        agent = _Agent()
        completions = TicketCompletions(linger=0.2)
        completions.start()
        with capture_logs() as logs:
            for ticket in ("t0", "refused", "t2"):
                await completions.submit(agent, ticket)  # type: ignore[arg-type]
            await completions.stop(grace=5)
        return agent, logs

    agent, logs = asyncio.run(scenario())
    assert agent.completed == ["t0", "t2"]
    events = [(e["event"], e.get("ticket")) for e in logs]
    assert events == [("complete_scripts_refused", None), ("complete_script_failed", "refused")]
