"""Telling agents they may delete finished tickets, off the path of the work that follows.

CompleteScript only lets an agent delete a ticket whose result the server has already stored,
so nothing waits on its answer: a deployment's next step, or the next script on the machine,
need not pay its round trip. The completions are still supervised: they run in one task owned
by this component, failures are logged (the agent's periodic cleaner removes what a lost
completion leaves), and stopping waits a grace period for those queued.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from cuttle.server.comms.client import TentacleClient
from cuttle.server.errors import AgentError

__all__ = ["TicketCompletions"]

log = structlog.get_logger(__name__)

_QUEUE_LIMIT = 10_000


class TicketCompletions:
    """A queue of tickets to complete on their agents, worked by one supervised task."""

    def __init__(self, queue_limit: int = _QUEUE_LIMIT) -> None:
        self._queue: asyncio.Queue[tuple[TentacleClient, str]] = asyncio.Queue(queue_limit)
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start working the queue."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="ticket-completions")

    async def submit(self, client: TentacleClient, ticket: str) -> None:
        """Queue a stored ticket for completion; waits only while the queue is full."""
        if self._worker is None or self._worker.done():
            # Not started (or stopping): do it here, as before, rather than drop it.
            await _complete(client, ticket)
            return
        await self._queue.put((client, ticket))

    async def stop(self, grace: float = 3.0) -> None:
        """Finish what is queued within the grace period, then stop."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._queue.join()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            client, ticket = await self._queue.get()
            try:
                await _complete(client, ticket)
            except Exception:
                # One bad completion must not stop the others.
                log.exception("complete_script_crashed", machine=client.machine, ticket=ticket)
            finally:
                self._queue.task_done()


async def _complete(client: TentacleClient, ticket: str) -> None:
    try:
        await client.complete_script(ticket)
    except AgentError as exc:
        # The result is stored; the agent's cleaner removes the ticket later anyway.
        log.warning("complete_script_failed", machine=client.machine, error=str(exc))
