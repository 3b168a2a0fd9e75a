"""The engine's sense of time: one seam for every wait it times, so tests can replace it.

The engine waits in a few places whose length is a rule of the product, not a detail: the
pause before an action is retried, how long an agent may stay out of reach before its result
counts as unknown, when a cancel kept for an away agent is tried again, how often a wait for a
person re-reads the store. They all ask the `Clock` carried by `RunContext`; the server runs
with `SYSTEM_CLOCK` (the event loop's own sleeps and timeouts, `time.monotonic`, the store's
wall-clock milliseconds), and tests run them with a clock whose time is virtual.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from cuttle.server.store.records import now_ms


class Clock(Protocol):
    """Time as the engine reads and waits for it."""

    def now(self) -> float:
        """Seconds on a monotonic scale, for measuring how long something lasted."""
        ...

    def wall_ms(self) -> int:
        """Unix milliseconds, for times the store keeps (and compares across nodes)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds`."""
        ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        """A block that is cancelled after `seconds` and raises TimeoutError (None: never)."""
        ...


class SystemClock:
    """The real time of the host and the event loop."""

    def now(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    def wall_ms(self) -> int:
        """The store's timestamp unit, from the system clock."""
        return now_ms()

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep()."""
        await asyncio.sleep(seconds)

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        """asyncio.timeout()."""
        return asyncio.timeout(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
