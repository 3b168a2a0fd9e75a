"""What the in-memory Tentacle simulates, with the errors the real transports raise for it.

The agent contract itself is the contract suite's (tests/integration/
test_tentacle_client_contract.py runs it against this fake too); these are the faults.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from cuttle.server.comms.client import TentacleClient
from cuttle.server.domain.scripts import ScriptRequest, ScriptStatus
from cuttle.server.errors import AgentRejected, UnknownTicket, Unreachable
from tests.fakes.memory_tentacle import MemoryTentacle

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")


def _with_agent(
    home: Path, scenario: Callable[[MemoryTentacle], Awaitable[T]], **settings: object
) -> T:
    async def main() -> T:
        agent = await MemoryTentacle(home, "web-01", **settings).start()
        try:
            async with asyncio.timeout(20):
                return await scenario(agent)
        finally:
            await agent.stop()

    return asyncio.run(main())


def _script(body: str) -> ScriptRequest:
    return ScriptRequest(ticket=f"memory-{uuid.uuid4().hex}", body=body, syntax="bash")


async def _first_batch(watch: AsyncIterator[ScriptStatus]) -> ScriptStatus:
    async for status in watch:
        if status.runs:
            return status
    raise AssertionError("the watch ended before any line")


def test_an_away_agent_is_unreachable_and_its_open_watch_is_lost(tmp_path: Path) -> None:
    async def scenario(agent: MemoryTentacle) -> None:
        client = agent.client()
        request = _script("echo started; sleep 30")
        watch = client.watch_script(request.ticket, start=request)
        first = await _first_batch(watch)
        assert first.runs[0].text == b"started"

        agent.go_away("connection refused")
        with pytest.raises(Unreachable) as lost:
            await anext(watch)
        assert lost.value.reason == "lost"
        with pytest.raises(Unreachable) as refused:
            await client.get_status(request.ticket)
        assert refused.value.reason == "connection refused"

        agent.come_back()
        # The network broke, not the agent: the script ran on all along.
        status = await client.get_status(request.ticket)
        assert status.state == "running"
        assert agent.calls == ["WatchScript", "GetStatus", "GetStatus"]

    _with_agent(tmp_path, scenario)


def test_a_timed_out_call_may_or_may_not_have_done_its_work(tmp_path: Path) -> None:
    async def scenario(agent: MemoryTentacle) -> None:
        client = agent.client()
        delivered, lost = _script("echo one"), _script("echo two")

        agent.time_out_next("StartScript", delivered=True)
        with pytest.raises(Unreachable, match="timed out"):
            await client.start_script(delivered)
        # The agent had it: the answer was lost, not the request.
        assert (await client.get_status(delivered.ticket)).ticket == delivered.ticket

        agent.time_out_next("StartScript", delivered=False)
        with pytest.raises(Unreachable, match="timed out"):
            await client.start_script(lost)
        with pytest.raises(UnknownTicket):
            await client.get_status(lost.ticket)
        # Once each: the next start goes through.
        assert (await client.start_script(lost)).ticket == lost.ticket

    _with_agent(tmp_path, scenario)


def test_a_call_slower_than_its_timeout_times_out(tmp_path: Path) -> None:
    async def scenario(agent: MemoryTentacle) -> None:
        # A script that ignores SIGTERM: the cancel answers only after the grace period.
        request = _script("trap '' TERM; echo started; sleep 30")
        hasty = TentacleClient(agent.client().transport, default_timeout=0.2)
        await _first_batch(hasty.watch_script(request.ticket, start=request))
        with pytest.raises(Unreachable) as timed_out:
            await hasty.cancel_script(request.ticket, "stop")
        assert timed_out.value.reason == "timed out"
        # The cancel went on on the agent: the script is killed all the same.
        patient = agent.client()
        async for status in patient.watch_script(request.ticket):
            final = status
        assert final.state == "cancelled"

    _with_agent(tmp_path, scenario, cancel_grace=1.0)


def test_a_restarted_agent_reports_a_script_it_lost_as_result_unknown(tmp_path: Path) -> None:
    async def scenario(agent: MemoryTentacle) -> None:
        client = agent.client()
        finished, running = _script("echo done"), _script("echo started; sleep 30")
        async for status in client.watch_script(finished.ticket, start=finished):
            assert status.state in ("running", "complete")
        watch = client.watch_script(running.ticket, start=running)
        await _first_batch(watch)
        manager = agent.manager

        restart = asyncio.create_task(agent.restart())
        with pytest.raises(Unreachable) as lost:
            await anext(watch)
        assert lost.value.reason == "lost"
        await restart

        assert agent.manager is not manager
        lost_run = await client.get_status(running.ticket)
        assert lost_run.state == "result_unknown"
        # What had finished keeps its result across the restart.
        kept = await client.get_status(finished.ticket)
        assert (kept.state, kept.exit_code) == ("complete", 0)

    _with_agent(tmp_path, scenario)


def test_agent_errors_arrive_typed_as_over_the_wire(tmp_path: Path) -> None:
    async def scenario(agent: MemoryTentacle) -> None:
        client = agent.client()
        with pytest.raises(UnknownTicket):
            await client.get_status("no-such-ticket")
        with pytest.raises(AgentRejected) as malformed:
            await client.transport.unary("GetStatus", b"\xff\xff\xff", None)
        assert malformed.value.kind == "invalid_argument"
        with pytest.raises(AgentRejected) as unknown:
            await client.transport.unary("NoSuchMethod", b"", None)
        assert unknown.value.kind == "invalid_argument"

    _with_agent(tmp_path, scenario)
