"""Telling agents they may delete finished tickets, off the path of the work that follows.

CompleteScript only lets an agent delete a ticket whose result the server has already stored,
so nothing waits on its answer: a deployment's next step, or the next script on the machine,
need not pay its round trip. Nor need every ticket pay one of its own: the worker lingers a
moment after the first ticket to gather those that follow and sends each machine's tickets in
one CompleteScripts call (an agent that predates it gets one CompleteScript per ticket).

The completions are still supervised: they run in one task owned by this component, failures
are logged (the agent's periodic cleaner removes what a lost completion leaves), and stopping
waits a grace period for those queued.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from cuttle.server.comms.client import TentacleClient
from cuttle.server.errors import AgentError, AgentRejected, UnknownTicket

__all__ = ["TicketCompletions"]

log = structlog.get_logger(__name__)

_QUEUE_LIMIT = 10_000
# How long the worker waits for more tickets once it has one: short enough that a workspace
# is gone at once by any human measure, long enough to gather a busy machine's tickets.
_LINGER_SECONDS = 0.05
# The agent takes at most 1,000 per call (MAX_COMPLETE_TICKETS).
_BATCH_LIMIT = 500


class TicketCompletions:
    """A queue of tickets to complete on their agents, worked by one supervised task."""

    def __init__(
        self,
        queue_limit: int = _QUEUE_LIMIT,
        linger: float = _LINGER_SECONDS,
        batch_limit: int = _BATCH_LIMIT,
    ) -> None:
        self._queue: asyncio.Queue[tuple[TentacleClient, str]] = asyncio.Queue(queue_limit)
        self._worker: asyncio.Task[None] | None = None
        self._linger = linger
        self._batch_limit = batch_limit

    def start(self) -> None:
        """Start working the queue."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="ticket-completions")

    async def submit(self, client: TentacleClient, ticket: str) -> None:
        """Queue a stored ticket for completion; waits only while the queue is full."""
        if self._worker is None or self._worker.done():
            # Not started (or stopping): do it here, as before, rather than drop it.
            await _complete(client, [ticket])
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
            batch = [await self._queue.get()]
            try:
                await self._gather(batch)
                by_client: dict[int, tuple[TentacleClient, list[str]]] = {}
                for client, ticket in batch:
                    by_client.setdefault(id(client), (client, []))[1].append(ticket)
                for client, tickets in by_client.values():
                    try:
                        await _complete(client, tickets)
                    except Exception:
                        # One bad completion must not stop the others.
                        log.exception(
                            "complete_script_crashed", machine=client.machine, tickets=len(tickets)
                        )
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _gather(self, batch: list[tuple[TentacleClient, str]]) -> None:
        """Add what arrives within the linger time (or is queued already) to ``batch``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        while len(batch) < self._batch_limit:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                return


async def _complete(client: TentacleClient, tickets: list[str]) -> None:
    try:
        if len(tickets) > 1:
            try:
                await client.complete_scripts(tickets)
                return
            except AgentRejected as exc:
                if exc.kind != "invalid_argument":
                    raise
                # An agent that predates CompleteScripts (or refused the list): one by one.
                log.info("complete_scripts_refused", machine=client.machine, error=str(exc))
        for ticket in tickets:
            try:
                await client.complete_script(ticket)
            except UnknownTicket:
                continue  # completed before: nothing left to delete
            except AgentRejected as exc:
                # This ticket was refused; the others may not be. (An unreachable agent ends
                # the batch below instead of timing out once per ticket.)
                log.warning(
                    "complete_script_failed", machine=client.machine, ticket=ticket, error=str(exc)
                )
    except AgentError as exc:
        # The result is stored; the agent's cleaner removes the ticket later anyway.
        log.warning("complete_script_failed", machine=client.machine, error=str(exc))
