"""What a deployment's runner knows of its own task tree, so it need not read it back.

While a runner holds its task (the claim), it is the only writer of the task's nodes: the tree
it loaded when it started, plus what its own transactions returned, is what the store holds.
The helpers here save store round trips per action-on-machine on that ground without moving
any transition: each is still stored before the runner acts on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial

from sqlalchemy.orm import Session

from cuttle.server.domain.task_states import NodeState
from cuttle.server.store import tasks
from cuttle.server.store.records import TaskNodeRecord
from cuttle.server.store.transactions import Transactions


class ActionStarts:
    """Starts each action node once per execution, however many machines reach it at once.

    Every machine of a step used to start the action itself (a transaction that read the node
    and found it running already, N - 1 times). The first machine stores the start; the others
    wait until it is stored, so none of them acts before the action shows as running.
    """

    def __init__(self) -> None:
        self._started: set[str] = set()
        self._lock = asyncio.Lock()

    async def start(self, node_id: str, store: Callable[[str], Awaitable[None]]) -> None:
        """Store the start of node_id with `store` unless this execution did already."""
        if node_id in self._started:
            return
        async with self._lock:
            if node_id in self._started:
                return
            await store(node_id)
            self._started.add(node_id)


def after_run(node: TaskNodeRecord, stored: tasks.RunUpdate | None) -> TaskNodeRecord | None:
    """The machine node as its run's stored outcome left it, runs included; None if not known.

    `stored` is what the outcome's transaction returned (ScriptRun.stored); the node's earlier
    runs are the ones the runner had, the outcome's run replaces or joins them.
    """
    if stored is None or stored.node is None or stored.node.id != node.id:
        return None
    runs = [r for r in node.runs if r.ticket != stored.run.ticket]
    runs.append(stored.run)
    runs.sort(key=lambda r: r.attempt)
    return replace(stored.node, runs=tuple(runs))


async def stored_states(tx: Transactions, node_ids: Sequence[str]) -> dict[str, NodeState]:
    """The stored state of each node, read in one transaction (not one per node)."""
    if not node_ids:
        return {}
    return await tx.read(partial(_states, list(node_ids)))


def _states(node_ids: list[str], session: Session) -> dict[str, NodeState]:
    return tasks.node_states(session, node_ids)
