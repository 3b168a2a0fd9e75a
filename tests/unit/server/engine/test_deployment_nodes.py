"""What a deployment's runner keeps of its tree instead of reading it back from the store."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.domain.task_states import NodeState, RunState
from cuttle.server.engine.deployment_nodes import ActionStarts, after_run, stored_states
from cuttle.server.store import tasks
from cuttle.server.store.transactions import Transactions

SPEC = ScriptTaskSpec(syntax="bash", body="true")


def test_after_run_is_the_node_a_read_after_the_run_finds(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        task = tasks.create_script_task(
            session, description="x", spec=SPEC, machine_names=["Web-1"]
        )
        node_id = task.machine_nodes[0].id
        # The runner's view of a first run: the node as loaded, its run pending.
        loaded = tasks.get_node(session, node_id)
        first = tasks.update_run_and_node(
            session, task.targets[0].ticket, state=RunState.COMPLETE, exit_code=1, message="no"
        )
        after_first = tasks.get_node(session, node_id)
        # A retry: the new run is not among the node's runs until its outcome comes.
        retry = tasks.add_run(session, node_id)
        second = tasks.update_run_and_node(
            session, retry.ticket, state=RunState.COMPLETE, exit_code=0
        )
    with sessions.begin() as session:
        after_second = tasks.get_node(session, node_id)
    assert after_run(loaded, first) == after_first
    assert after_run(after_first, second) == after_second
    assert [r.attempt for r in after_second.runs] == [1, 2]
    # Unknown outcomes (a run that had ended before, a pending one) are left to a read.
    assert after_run(loaded, None) is None
    assert after_run(loaded, tasks.RunUpdate(first.run, None)) is None


def test_stored_states_reads_the_states_in_one_transaction(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        task = tasks.create_script_task(
            session, description="x", spec=SPEC, machine_names=["Web-1", "Web-2"]
        )
        tasks.update_run(session, task.targets[1].ticket, state=RunState.RUNNING)
    tx = Transactions(sessions)
    try:
        ids = [n.id for n in task.machine_nodes]
        states = asyncio.run(stored_states(tx, ids))
        assert states == {ids[0]: NodeState.PENDING, ids[1]: NodeState.RUNNING}
        assert asyncio.run(stored_states(tx, [])) == {}
    finally:
        tx.close()


def test_an_action_is_started_once_and_stored_before_anyone_goes_on() -> None:
    stored: list[str] = []
    gate = asyncio.Event()

    async def store(node_id: str) -> None:
        await gate.wait()
        stored.append(node_id)

    async def machine(starts: ActionStarts) -> bool:
        await starts.start("action-1", store)
        # Nobody returns before the start is stored.
        return stored == ["action-1"]

    async def scenario() -> list[bool]:
        starts = ActionStarts()
        async with asyncio.TaskGroup() as group:
            machines = [group.create_task(machine(starts)) for _ in range(20)]
            await asyncio.sleep(0)
            gate.set()
        await starts.start("action-2", store)
        return [m.result() for m in machines]

    assert all(asyncio.run(scenario()))
    assert stored == ["action-1", "action-2"]


def test_a_start_that_failed_is_tried_again_by_the_next_machine() -> None:
    attempts: list[str] = []

    async def store(node_id: str) -> None:
        attempts.append(node_id)
        if len(attempts) == 1:
            raise RuntimeError("database gone")

    async def scenario() -> None:
        starts = ActionStarts()
        with pytest.raises(RuntimeError, match="database gone"):
            await starts.start("action-1", store)
        await starts.start("action-1", store)
        await starts.start("action-1", store)

    asyncio.run(scenario())
    assert attempts == ["action-1", "action-1"]
