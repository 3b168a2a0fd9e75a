"""Group commit of a ticket's output to its journal: keep reading while the disk syncs.

An fsync takes milliseconds. If the reader of a script's pipe waited for each one, the pipe
would fill during the sync and the script would block on its next write: output would go only as
fast as one pipe-buffer per fsync. Instead the reader hands runs to this writer and goes on
reading; the writer appends whatever has gathered since its last sync as one batch (one write,
one fsync). Under load, batches grow until a sync carries everything the script wrote meanwhile.

Memory is bounded: once ``max_pending_bytes`` wait for the disk, ``put`` waits too, which stops
the reader and so, through the pipe, the script. A failed append (disk full) is raised to the
next ``put`` or ``flush``; what it held is not lost from memory until it is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from cuttle.tentacle.execution.journal import Journal, PendingRun

__all__ = ["JournalWriter"]

_MAX_PENDING_BYTES = 16 * 1024 * 1024


class JournalWriter:
    """Appends runs to one journal in batches; `flush` waits until all put so far is durable."""

    def __init__(
        self,
        journal: Journal,
        written: Callable[[], Coroutine[Any, Any, None]],
        max_pending_bytes: int = _MAX_PENDING_BYTES,
    ) -> None:
        self._journal = journal
        self._written = written
        self._max_pending = max_pending_bytes
        self._pending: list[PendingRun] = []
        self._pending_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._error: BaseException | None = None

    async def put(self, runs: list[PendingRun]) -> None:
        """Queue runs for the journal; waits only while too much is already waiting."""
        self._raise_failure()
        if not runs:
            return
        self._pending.extend(runs)
        self._pending_bytes += sum(len(run[3]) for run in runs)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="journal-writer")
        if self._pending_bytes > self._max_pending:
            async with self._progress:
                await self._progress.wait_for(
                    lambda: self._pending_bytes <= self._max_pending or self._error is not None
                )
            self._raise_failure()

    async def flush(self) -> None:
        """Return once everything put so far is durable (or raise why it could not be)."""
        while self._task is not None and not self._task.done():
            # Shielded: a caller cancelled while waiting must not cancel the write under it.
            await asyncio.shield(self._task)
        self._raise_failure()

    async def _drain(self) -> None:
        try:
            while self._pending:
                # Swapped out, not shared: puts during the append go to a fresh list.
                batch, self._pending = self._pending, []
                size = sum(len(run[3]) for run in batch)
                try:
                    await asyncio.to_thread(self._journal.append, batch)
                except BaseException:
                    # Not written: keep them, in order, ahead of anything put since.
                    self._pending[:0] = batch
                    raise
                self._pending_bytes -= size
                await self._written()
                async with self._progress:
                    self._progress.notify_all()
        except Exception as exc:
            self._error = exc
            async with self._progress:
                self._progress.notify_all()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error
