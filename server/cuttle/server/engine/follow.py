"""Following a task: its log from any position, then what this node stores as it is stored.

A follower subscribes to the task's changes before its first read (engine/notifications.py), so
nothing that happens after it started is missed. The log comes from memory when this node just
stored it and the follower is up to date; from the store when it joined late, fell behind (its
buffer overflowed), or something was written without being handed over (another node, a cancel
delivered later): one indexed seek, each chunk unpacked once. Target and task ends are sent only
once every line stored before them has been sent (the task row's log_count says how far that is);
the task row is read only when something other than lines changed, not once per batch of lines.

The only timer is `poll_interval`: how often a follower looks at the store even though nothing
told it of a change. Changes another node makes reach it through PostgreSQL's LISTEN/NOTIFY
(store/change_feed.py); the poll only covers a notification lost while that connection was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from functools import partial

from cuttle.server.domain.scripts import LogChunk
from cuttle.server.domain.task_states import FINISHED_TASK_STATES
from cuttle.server.engine.notifications import Subscription, TaskSignals
from cuttle.server.store import task_log, tasks
from cuttle.server.store.records import TaskRecord, TaskTargetRecord
from cuttle.server.store.transactions import Transactions

# A read-back sends at least this much text per message (all of it when there is less).
MESSAGE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Started:
    """The task as it was when the follower started."""

    task: TaskRecord


@dataclass(frozen=True)
class LogChunks:
    """Log lines, consecutive in position from the first chunk's first position."""

    chunks: tuple[LogChunk, ...]


@dataclass(frozen=True)
class TargetFinished:
    """A machine's run ended; every line it stored before was sent before this."""

    target: TaskTargetRecord


@dataclass(frozen=True)
class Updated:
    """The task's state changed without ending (waiting for a person, cancelling, ...)."""

    task: TaskRecord


@dataclass(frozen=True)
class Finished:
    """The task ended; nothing follows."""

    task: TaskRecord


FollowEvent = Started | LogChunks | TargetFinished | Updated | Finished


@dataclass(frozen=True)
class FollowSettings:
    """How a follower reads; all configurable."""

    # The safety net for changes written by another server node; not needed on one node.
    poll_interval: float = 1.0
    # At most one read of the task's tree per this many seconds while following: a deployment
    # to many machines changes it in bursts, and each read costs the whole tree (the ends of
    # machines are sent this much later at worst; lines are never held back).
    record_interval: float = 0.25
    # Bytes of text read from the store per transaction.
    read_bytes: int = task_log.READ_BYTES
    message_bytes: int = MESSAGE_BYTES


class TaskFollower:
    """One follower of one task: yields its events from a log position until it ends."""

    def __init__(
        self,
        tx: Transactions,
        signals: TaskSignals,
        task_id: str,
        after_position: int,
        settings: FollowSettings,
    ) -> None:
        self._tx = tx
        self._signals = signals
        self._task_id = task_id
        self._after = after_position
        self._settings = settings
        # Chunks handed over from memory and not sent yet, in the order they came.
        self._held: list[LogChunk] = []
        # Whether the store may hold lines that memory does not: at first, and after a
        # change that came without its lines.
        self._check_store = True
        # Whether the task row must be read again: at first, and after a change that was not
        # just lines (ends and states come that way); lines alone never end anything.
        self._check_record = True
        # How far the task row last said lines were stored (a read that follows it finds them).
        self._stored_to = 0
        # How many times the log was read from the store (memory served the rest), and the
        # task row: what a follower costs the database.
        self.store_reads = 0
        self.record_reads = 0
        # When the tree was last read through (time.monotonic), for record_interval.
        self._record_read_at = -math.inf
        # A read of the store started while the previous one's messages are sent: (the
        # position it reads after, the read). Owned here and cancelled when following stops.
        self._prefetch: tuple[int, asyncio.Task[list[LogChunk]]] | None = None

    async def events(self, *, follow: bool) -> AsyncIterator[FollowEvent]:
        """The task's events; without `follow`, stop at the end of what is stored now."""
        try:
            async with contextlib.aclosing(self._events(follow)) as events:
                async for event in events:
                    yield event
        finally:
            self._stop_prefetch()

    async def _events(self, follow: bool) -> AsyncGenerator[FollowEvent, None]:
        with self._signals.subscribe(self._task_id) as changes:
            record = await self._tx.read(partial(tasks.get, task_id=self._task_id))
            yield Started(record)
            last_state = record.state
            # By node (a machine has one per action it runs) and by the run's end (a retry
            # ending as the first run did is news too).
            reported: dict[str, tuple[str, int]] = {}
            while True:
                seen = changes.version
                async for chunks in self._log(changes):
                    yield LogChunks(chunks)
                deferred = None
                if self._check_record and follow:
                    wait = self._record_read_at + self._settings.record_interval - time.monotonic()
                    if wait > 0:
                        deferred = wait  # read when it is due, or when more comes first
                if self._check_record and deferred is None:
                    self._check_record = False
                    self.record_reads += 1
                    record = await self._tx.read(partial(tasks.get, task_id=self._task_id))
                    if record.log_count > self._after:
                        # Stored before we looked, handed over or not yet: send it first.
                        self._stored_to = record.log_count
                        self._check_record = True
                        if not self._held:
                            self._check_store = True
                        continue
                    self._record_read_at = time.monotonic()
                    for target in record.targets:
                        if target.finished_ms is None:
                            continue
                        ended = (target.state.value, target.finished_ms)
                        if reported.get(target.node_id) != ended:
                            reported[target.node_id] = ended
                            yield TargetFinished(target)
                    if record.state in FINISHED_TASK_STATES:
                        yield Finished(record)
                        return
                    if record.state != last_state:
                        last_state = record.state
                        yield Updated(record)
                if not follow:
                    return
                timeout = self._settings.poll_interval if deferred is None else deferred
                if not await changes.wait_past(seen, timeout) and deferred is None:
                    # Nothing here changed it; another node may have.
                    self._check_store = self._check_record = True

    async def _log(self, changes: Subscription) -> AsyncIterator[tuple[LogChunk, ...]]:
        """Everything stored after the last position sent: from memory, else from the store."""
        while True:
            fresh, overflowed = changes.take()
            if overflowed:
                self._held.clear()
                self._check_store = True
            self._held.extend(fresh)
            if sum(chunk.size for chunk in self._held) > changes.limit_bytes:
                # Waiting behind a gap for too long: the store has all of it.
                self._held.clear()
                self._check_store = True
            if changes.take_unexplained():
                # A change that came without lines: a state, or lines stored some other way.
                self._check_store = self._check_record = True
            ready = self._from_memory()
            if ready:
                for message in _messages(ready, self._settings.message_bytes):
                    yield message
                continue
            if self._held:
                # A gap before what memory holds: those lines are in the store.
                self._check_store = True
            if not self._check_store:
                return
            read = await self._read_store()
            if not read:
                if self._stored_to > self._after:
                    # The task row said these lines were stored, and a later read finds none:
                    # they were removed (retention). Go on after them rather than look forever.
                    self._after = self._stored_to
                self._check_store = False
                self._drop_sent()
                continue
            self._after = read[-1].last_position
            self._drop_sent()
            if sum(chunk.size for chunk in read) >= self._settings.read_bytes:
                # More is likely stored: read it while these messages go out.
                self._prefetch = (self._after, asyncio.create_task(self._read(self._after)))
            for message in _messages(read, self._settings.message_bytes):
                yield message

    async def _read_store(self) -> list[LogChunk]:
        """The store's lines after the last position sent (read ahead already, if it was)."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            after, task = prefetch
            if after == self._after:
                return await task
            # Memory moved on meanwhile: what was read ahead starts at the wrong place.
            _discard(task)
        return await self._read(self._after)

    async def _read(self, after: int) -> list[LogChunk]:
        self.store_reads += 1
        return await self._tx.read(
            partial(
                task_log.read_chunks,
                task_id=self._task_id,
                after_position=after,
                max_bytes=self._settings.read_bytes,
            )
        )

    def _stop_prefetch(self) -> None:
        if self._prefetch is not None:
            _discard(self._prefetch[1])
            self._prefetch = None

    def _from_memory(self) -> list[LogChunk]:
        """Held chunks that continue the log from the last position sent, in order."""
        self._drop_sent()
        if not self._held:
            return []
        self._held.sort(key=lambda chunk: chunk.first_position)
        ready: list[LogChunk] = []
        while self._held and self._held[0].first_position <= self._after + 1:
            chunk = task_log.skip_to(self._held.pop(0), self._after)
            ready.append(chunk)
            self._after = chunk.last_position
        return ready

    def _drop_sent(self) -> None:
        self._held = [chunk for chunk in self._held if chunk.last_position > self._after]


def _discard(task: asyncio.Task[list[LogChunk]]) -> None:
    """Cancel a read nobody needs; a failure it ended with is seen here, not reported as lost."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


def _messages(chunks: list[LogChunk], size: int) -> list[tuple[LogChunk, ...]]:
    """Chunks grouped into messages of at least `size` bytes of text (but the last)."""
    messages: list[tuple[LogChunk, ...]] = []
    group: list[LogChunk] = []
    total = 0
    for chunk in chunks:
        group.append(chunk)
        total += chunk.size
        if total >= size:
            messages.append(tuple(group))
            group, total = [], 0
    if group:
        messages.append(tuple(group))
    return messages
