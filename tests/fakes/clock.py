"""Virtual time for the engine (engine/clock.py): its timed waits end when the test says so.

`FakeClock` keeps a virtual `now()`; a `sleep()` or a `timeout()` registers a timer at a
virtual deadline and nothing else happens until time moves past it: `await advance(seconds)`
moves it by hand, and `autojump()` moves it to the next deadline whenever a timer is pending and the
loop has had its turn (as trio's MockClock does with a zero threshold). Under autojump a wait
ends as soon as the loop is idle, however long it is in virtual time: a 15 s retry pause or a
600 s lost agent costs a few event-loop turns. Virtual time does not wait for real work (a
script running on a Tentacle, a transaction in the store's thread pool): a test that needs a
real event to come before a virtual deadline orders them itself (advance by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType

from cuttle.server.store.records import now_ms

# Loop turns a woken task gets at its deadline before time moves on (a chain of plain awaits).
_SETTLE_TURNS = 5


@dataclass(order=True)
class _Timer:
    deadline: float
    order: int
    fire: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class FakeClock:
    """A Clock whose time moves only by advance() or autojump()."""

    def __init__(self, start: float = 1000.0) -> None:
        self._start = start
        self._now = start
        # Wall time starts at the real one, so stored timestamps look like today's.
        self._wall_start_ms = now_ms()
        self._timers: list[_Timer] = []
        self._order = itertools.count()
        self._scheduled = asyncio.Event()

    def now(self) -> float:
        """Virtual monotonic seconds."""
        return self._now

    def wall_ms(self) -> int:
        """Virtual unix milliseconds: the real time at creation plus the virtual time since."""
        return self._wall_start_ms + round((self._now - self._start) * 1000)

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the clock was made."""
        return self._now - self._start

    @property
    def pending(self) -> int:
        """Sleeps and timeouts waiting for virtual time."""
        return sum(1 for t in self._timers if not t.cancelled)

    def _schedule(self, seconds: float, fire: Callable[[], None]) -> _Timer:
        timer = _Timer(self._now + max(seconds, 0.0), next(self._order), fire)
        heapq.heappush(self._timers, timer)
        self._scheduled.set()
        return timer

    async def sleep(self, seconds: float) -> None:
        """Return once virtual time has moved `seconds` on (a zero sleep yields once)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self._schedule(seconds, wake)
        try:
            await woken
        finally:
            timer.cancelled = True

    def timeout(self, seconds: float | None) -> _FakeTimeout:
        """As asyncio.timeout(), the deadline in virtual seconds."""
        return _FakeTimeout(self, seconds)

    async def advance(self, seconds: float) -> None:
        """Move virtual time on, ending every wait whose deadline it passes, in order."""
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: float) -> None:
        """Move virtual time to `when` (never backwards), ending the waits due by then.

        Time stops at each deadline on the way and the woken tasks get their turn there, so
        they read their own deadline as now, and a wait they start falls due in order too.
        """
        while (deadline := self.next_deadline()) is not None and deadline <= when:
            self._now = max(self._now, deadline)
            while self._timers and self._timers[0].deadline <= deadline:
                timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    timer.cancelled = True
                    timer.fire()
            for _ in range(_SETTLE_TURNS):
                await asyncio.sleep(0)
        self._now = max(self._now, when)

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, if any."""
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].deadline if self._timers else None

    @contextlib.asynccontextmanager
    async def autojump(self, pause: float = 0.0) -> AsyncIterator[FakeClock]:
        """Within the block, time jumps to the next deadline whenever the loop is idle.

        `pause` (real seconds, default none) lets real work settle before each jump.
        """
        jumper = asyncio.create_task(self._jump(pause), name="fake-clock-autojump")
        try:
            yield self
        finally:
            jumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jumper

    async def _jump(self, pause: float) -> None:
        while True:
            await self._scheduled.wait()
            # Let every task that is ready run first (those a jump just woke, too).
            await asyncio.sleep(pause)
            deadline = self.next_deadline()
            if deadline is None:
                self._scheduled.clear()
                continue
            await self.advance_to(deadline)


class _FakeTimeout:
    """asyncio.timeout() with a virtual deadline: the real Timeout, expired by the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float | None) -> None:
        self._clock = clock
        self._seconds = seconds
        self._inner = asyncio.timeout(None)
        self._timer: _Timer | None = None

    async def __aenter__(self) -> _FakeTimeout:
        await self._inner.__aenter__()
        if self._seconds is not None:
            if self._seconds <= 0:
                self._expire()
            else:
                self._timer = self._clock._schedule(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        if not self._inner.expired():
            self._inner.reschedule(asyncio.get_running_loop().time())

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancelled = True
        await self._inner.__aexit__(kind, error, traceback)
