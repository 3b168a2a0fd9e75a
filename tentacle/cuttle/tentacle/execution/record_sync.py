"""Terminal records made durable in batches, a moment after they are written.

A script's terminal record is written (page cache) before its state becomes visible; making it
durable is only worth something until the server has stored the result and completed the
ticket, which deletes the record anyway. So the fsync is not paid per script: finished tickets
wait here for ``delay`` seconds and are then synced together, in one thread job, and a ticket
completed before its turn is never synced at all. Under load that turns one journal commit per
script into one per batch, and the commit no longer stalls the next script's claim (its mkdir
waits for a commit in flight on ext4).

The cost is a window of ``delay`` seconds after a script ends in which a power cut loses its
result: the ticket then reads back as "result unknown", which is then the truth. ``delay`` 0
syncs at once, batching only what finished together.
"""

from __future__ import annotations

import asyncio

import structlog

from cuttle.tentacle.execution.tickets import TicketPaths, sync_record

__all__ = ["RecordSyncer"]

log = structlog.get_logger()


class RecordSyncer:
    """Fsyncs the terminal records of finished tickets, in batches, unless completed first."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._pending: dict[str, TicketPaths] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._batches: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """How many written records wait for their fsync."""
        return len(self._pending)

    def add(self, ticket: str, paths: TicketPaths) -> None:
        """The ticket's terminal record is written: sync it within ``delay``."""
        self._pending[ticket] = paths
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._delay, self._due)

    def discard(self, ticket: str) -> None:
        """The ticket is completed (its directory goes): its record need not be synced."""
        self._pending.pop(ticket, None)

    def _due(self) -> None:
        self._timer = None
        if self._pending:
            task = asyncio.create_task(self._sync_pending(), name="record-sync")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _sync_pending(self) -> None:
        batch, self._pending = self._pending, {}
        failures = await asyncio.to_thread(_sync_all, batch)
        for ticket, error in failures:
            # Disk trouble: the record may not survive a power cut, and then reads back as
            # "result unknown". The result was answered from memory all the same.
            log.warning("ticket_sync_failed", ticket=ticket, error=error)

    async def flush(self) -> None:
        """Sync everything written so far, now (a clean stop; tests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            await self._sync_pending()
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)


def _sync_all(batch: dict[str, TicketPaths]) -> list[tuple[str, str]]:
    """Fsync each record of the batch; the first fsync commits them all on a journaling fs."""
    failures: list[tuple[str, str]] = []
    for ticket, paths in batch.items():
        try:
            sync_record(paths)
        except FileNotFoundError:
            pass  # completed (and renamed away) while the batch ran: nothing left to keep
        except OSError as exc:
            failures.append((ticket, str(exc)))
    return failures
