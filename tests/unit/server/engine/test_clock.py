"""The engine's clock seam: the system clock is asyncio's, the fake one moves only when told."""

from __future__ import annotations

import asyncio
import time

import pytest

from cuttle.server.engine.clock import SYSTEM_CLOCK
from cuttle.server.store.records import now_ms
from tests.fakes.clock import FakeClock

pytestmark = pytest.mark.timeout(30)


def test_the_system_clock_is_the_event_loops_time() -> None:
    async def main() -> None:
        assert abs(SYSTEM_CLOCK.now() - time.monotonic()) < 1
        assert abs(SYSTEM_CLOCK.wall_ms() - now_ms()) < 1000
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            async with SYSTEM_CLOCK.timeout(0.05):
                await asyncio.Event().wait()
        await SYSTEM_CLOCK.sleep(0.01)
        assert time.monotonic() - began >= 0.05

    asyncio.run(main())


def test_a_fake_sleep_ends_when_virtual_time_passes_it() -> None:
    clock = FakeClock()

    async def main() -> None:
        woke: list[float] = []

        async def nap(seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append(clock.now() - 1000.0)

        naps = [asyncio.create_task(nap(s)) for s in (30, 10, 20)]
        await asyncio.sleep(0)
        assert clock.pending == 3
        await clock.advance(15)
        # Woken at its own deadline: it reads 10 s as now, not where time went on to.
        assert woke == [10]
        await clock.advance(15)
        await asyncio.gather(*naps)
        # Each woke at its own deadline, in order.
        assert woke == [10, 20, 30]
        assert clock.elapsed == 30
        assert clock.pending == 0

        # A wait started by a woken task falls due within the same advance.
        ticks: list[float] = []

        async def tick() -> None:
            for _ in range(5):
                await clock.sleep(1)
                ticks.append(clock.now() - 1030.0)

        ticking = asyncio.create_task(tick())
        await asyncio.sleep(0)
        await clock.advance(5)
        await ticking
        assert ticks == [1, 2, 3, 4, 5]

    asyncio.run(main())


def test_a_fake_timeout_expires_at_its_virtual_deadline_only() -> None:
    clock = FakeClock()

    async def main() -> None:
        never = asyncio.Event()
        done = asyncio.Event()

        async def bounded() -> None:
            try:
                async with clock.timeout(15):
                    await never.wait()
            finally:
                done.set()

        waiting = asyncio.create_task(bounded())
        await asyncio.sleep(0)
        await clock.advance(14.9)
        await asyncio.sleep(0)
        assert not done.is_set()
        await clock.advance(0.1)
        with pytest.raises(TimeoutError):
            await waiting
        # A block that ends in time leaves no timer behind and raises nothing.
        async with clock.timeout(5):
            pass
        assert clock.pending == 0

    asyncio.run(main())


def test_a_cancelled_fake_sleep_leaves_no_timer() -> None:
    clock = FakeClock()

    async def main() -> None:
        nap = asyncio.create_task(clock.sleep(60))
        await asyncio.sleep(0)
        nap.cancel()
        with pytest.raises(asyncio.CancelledError):
            await nap
        assert clock.pending == 0

    asyncio.run(main())


def test_autojump_passes_virtual_minutes_in_a_few_loop_turns() -> None:
    clock = FakeClock()

    async def main() -> float:
        began = time.monotonic()
        async with clock.autojump():
            for _ in range(40):
                await clock.sleep(15)
            with pytest.raises(TimeoutError):
                async with clock.timeout(600):
                    await asyncio.Event().wait()
        return time.monotonic() - began

    real = asyncio.run(main())
    assert clock.elapsed == 40 * 15 + 600
    assert real < 5
    # Stored times move with it.
    assert clock.wall_ms() - now_ms() >= 1_100_000
