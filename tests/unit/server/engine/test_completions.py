"""Completing tickets off the critical path: every one sent, failures logged, stop drains."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from cuttle.server.engine.completions import TicketCompletions
from cuttle.server.errors import Unreachable


class _Agent:
    """Stands in for a TentacleClient: records completions, can be slow or away."""

    def __init__(self, *, away: bool = False, gate: asyncio.Event | None = None) -> None:
        self.machine = "web-01"
        self.away = away
        self.gate = gate
        self.completed: list[str] = []

    async def complete_script(self, ticket: str) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        if self.away:
            raise Unreachable(self.machine, "timed out")
        self.completed.append(ticket)


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
