"""Tell followers of a task what changed on this node: a version per change, and the new log.

A follower subscribes *before* it first reads the task, then compares versions: every change
made after the subscription bumps its version, so a change that lands between the follower's
read and its wait is seen at once (no lost wakeup, no poll needed for correctness on one node).

Log chunks this node has just committed are handed to each subscriber as they are (a fan-out
from memory), so a follower of a running task never re-reads what it could have been given.
Each subscriber's buffer is bounded in bytes: the writer never waits for a follower; one that
falls behind loses its buffer and catches up from the database, as does one that joins late.
Changes written by another server node reach followers here through the database when it is
PostgreSQL (store/change_feed.py: each change is published, and another node's changes come
back as changed_elsewhere); followers keep a slow poll of the store as the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cuttle.server.domain.scripts import LogChunk
from cuttle.server.engine.clock import SYSTEM_CLOCK, Clock

# Bytes of log a follower may have waiting before it must catch up from the store instead.
DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024


@dataclass(eq=False)
class Subscription:
    """One follower's view of one task: a change version and a bounded buffer of new chunks."""

    task_id: str
    limit_bytes: int
    version: int = 0
    # Chunks in the order they were handed over (commit order is position order, but the
    # writers' coroutines may resume out of that order: readers check contiguity).
    chunks: list[LogChunk] = field(default_factory=list)
    buffered_bytes: int = 0
    # Set when chunks were dropped for lack of room: the follower must read the store.
    overflowed: bool = False
    # Set by a change that came without lines: it may have been log written some other way.
    unexplained: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, chunk: LogChunk | None) -> None:
        """Count a change and buffer the chunk, if any, unless there is no room for it."""
        self.version += 1
        if chunk is None:
            self.unexplained = True
        elif not self.overflowed:
            size = chunk.size
            if self.buffered_bytes + size > self.limit_bytes:
                # Never hold the writer up: forget it all, the store has it.
                self.chunks.clear()
                self.buffered_bytes = 0
                self.overflowed = True
            else:
                self.chunks.append(chunk)
                self.buffered_bytes += size
        self._changed.set()

    def take(self) -> tuple[list[LogChunk], bool]:
        """The chunks handed over since the last take, and whether some were dropped."""
        chunks, overflowed = self.chunks, self.overflowed
        self.chunks = []
        self.buffered_bytes = 0
        self.overflowed = False
        return chunks, overflowed

    def take_unexplained(self) -> bool:
        """Whether a change without lines came since the last call."""
        unexplained, self.unexplained = self.unexplained, False
        return unexplained

    async def wait_past(self, seen: int, timeout: float, clock: Clock = SYSTEM_CLOCK) -> bool:
        """Wait until the version passes `seen` (at once if it has); False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with clock.timeout(timeout):
                while self.version <= seen:
                    self._changed.clear()
                    await self._changed.wait()
        return self.version > seen


class TaskSignals:
    """Subscriptions per task; writers notify after their transaction commits."""

    def __init__(self, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}
        self._buffer_bytes = buffer_bytes
        self._publish: Callable[[str], None] | None = None

    def publish_to(self, publish: Callable[[str], None]) -> None:
        """Also tell other server nodes of every change (publish must not block)."""
        self._publish = publish

    def notify(self, task_id: str, stored: LogChunk | None = None) -> None:
        """Something about the task changed (and, with `stored`, these lines were committed)."""
        for subscription in self._subscribers.get(task_id, ()):
            subscription.deliver(stored)
        if self._publish is not None:
            self._publish(task_id)

    def changed_elsewhere(self, task_id: str) -> None:
        """Another node changed the task: its followers here look at the store."""
        for subscription in self._subscribers.get(task_id, ()):
            subscription.deliver(None)

    def maybe_missed(self) -> None:
        """Changes made elsewhere may have gone unheard: every follower looks at the store."""
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.deliver(None)

    @contextlib.contextmanager
    def subscribe(self, task_id: str) -> Iterator[Subscription]:
        """Follow the task's changes from now until the block ends."""
        subscription = Subscription(task_id, self._buffer_bytes)
        self._subscribers.setdefault(task_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(task_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[task_id]

    def subscribers(self, task_id: str) -> int:
        """How many followers the task has on this node (for tests and metrics)."""
        return len(self._subscribers.get(task_id, ()))
