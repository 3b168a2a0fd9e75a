"""`deploy --wait` progress: one read of the tree per burst of events, never one per event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli import deploy_commands

MACHINES = [f"web-{k:02d}" for k in range(50)]


def _tree(state: int, done: int) -> apb.Task:
    nodes = [apb.TaskNode(id="s", kind="step", name="Deploy", state="running")]
    nodes.append(apb.TaskNode(id="a", parent_id="s", kind="action", name="Run", state="running"))
    nodes.extend(
        apb.TaskNode(
            id=m, parent_id="a", kind="machine", name=m, state="success" if k < done else "pending"
        )
        for k, m in enumerate(MACHINES)
    )
    return apb.Task(id="t1", state=state, nodes=nodes)  # type: ignore[arg-type]


class _Server:
    """WatchTask sends a burst of events; GetTask answers slowly and counts its calls."""

    def __init__(self, events: list[apb.TaskEvent], tree: apb.Task) -> None:
        self.events = events
        self.tree = tree
        self.reads = 0
        self.interruption_lists = 0
        self.listed = asyncio.Event()
        self.metadata = ()
        self.stub = self
        self.interruptions = self

    async def _stream(self) -> AsyncIterator[apb.TaskEvent]:
        for event in self.events:
            yield event
            await asyncio.sleep(0)

    def WatchTask(self, request: apb.WatchTaskRequest, **_: Any) -> AsyncIterator[apb.TaskEvent]:  # noqa: N802
        return self._stream()

    async def GetTask(self, request: apb.GetTaskRequest, **_: Any) -> apb.Task:  # noqa: N802
        self.reads += 1
        # A read takes a while: the burst of events goes on meanwhile.
        for _ in range(20):
            await asyncio.sleep(0)
        return self.tree

    async def ListInterruptions(  # noqa: N802
        self, request: mpb.ListInterruptionsRequest, **_: Any
    ) -> mpb.ListInterruptionsResponse:
        self.interruption_lists += 1
        self.listed.set()
        return mpb.ListInterruptionsResponse(
            interruptions=[
                mpb.Interruption(id="i1", title="Approve 'Go live'", responses=["proceed"])
            ]
        )


def test_a_burst_of_machine_ends_costs_a_read_or_two_and_the_end_prints_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = [
        apb.TaskEvent(task_id="t1", target_finished=apb.TargetResult(machine=m)) for m in MACHINES
    ]
    final = _tree(apb.TASK_STATE_SUCCESS, len(MACHINES))
    final.nodes[0].state = "success"
    events.append(apb.TaskEvent(task_id="t1", finished=final))
    server = _Server(events, _tree(apb.TASK_STATE_RUNNING, 10))

    got = asyncio.run(deploy_commands.follow(server, "t1", "text"))  # type: ignore[arg-type]

    assert got == final
    assert 1 <= server.reads <= 3, server.reads
    err = capsys.readouterr().err
    # Every machine's end is printed once (from a read, or from the final tree).
    for machine in MACHINES:
        assert err.count(f"Run on {machine}: success") == 1, machine
    assert "Step Deploy: success" in err


def test_a_task_waiting_for_a_person_says_how_to_answer_before_any_other_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    answered = asyncio.Event()

    async def scenario() -> None:
        server = _Server([], _tree(apb.TASK_STATE_WAITING, 0))

        async def stream() -> AsyncIterator[apb.TaskEvent]:
            yield apb.TaskEvent(task_id="t1", updated=server.tree)
            # Nothing more comes until a person answers.
            await answered.wait()
            yield apb.TaskEvent(task_id="t1", finished=_tree(apb.TASK_STATE_SUCCESS, 50))

        server.WatchTask = lambda request, **_: stream()  # type: ignore[method-assign]
        following = asyncio.create_task(deploy_commands.follow(server, "t1", "text"))  # type: ignore[arg-type]
        async with asyncio.timeout(10):
            await server.listed.wait()
        assert "cuttle interruption respond i1 --proceed" in capsys.readouterr().err
        answered.set()
        await following

    asyncio.run(scenario())
