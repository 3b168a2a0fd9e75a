"""Group commit: output read during a sync goes into the next batch, none lost or reordered."""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from cuttle.tentacle.execution.journal import Journal, PendingRun
from cuttle.tentacle.execution.journal_writer import JournalWriter
from cuttle.tentacle.execution.model import LogLevel, LogSource


def runs(*texts: bytes) -> list[PendingRun]:
    return [(0, LogSource.STDOUT, LogLevel.INFO, t, 1) for t in texts]


class SlowJournal(Journal):
    """A real journal whose appends wait for the test to open a gate (a slow disk)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.batches: list[int] = []
        self.fail_next: OSError | None = None

    def append(self, batch: Sequence[PendingRun]) -> int:
        """Wait for the gate, then append (or fail once)."""
        self.gate.wait(timeout=10)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.batches.append(len(batch))
        return super().append(batch)


def texts(journal: Journal) -> list[bytes]:
    page, _ = journal.read_after(0, 1000)
    return [t for run in page for t in run.lines()]


def test_puts_during_a_sync_share_the_next_one(tmp_path: Path) -> None:
    journal = SlowJournal(tmp_path / "journal")
    wakes: list[int] = []

    async def woke() -> None:
        wakes.append(journal.last_sequence)

    async def scenario() -> None:
        writer = JournalWriter(journal, woke)
        await writer.put(runs(b"1"))
        await asyncio.sleep(0)  # the writer takes "1" and waits on the slow disk
        for n in range(2, 6):
            await writer.put(runs(str(n).encode()))  # returns at once: nobody waits for disk
        journal.gate.set()
        await writer.flush()

    asyncio.run(scenario())
    assert texts(journal) == [b"1", b"2", b"3", b"4", b"5"]
    assert journal.batches == [1, 4]
    assert wakes == [1, 5]
    journal.close()


def test_a_failed_append_is_raised_and_leaves_the_journal_whole(tmp_path: Path) -> None:
    journal = SlowJournal(tmp_path / "journal")
    journal.gate.set()
    journal.fail_next = OSError(errno.ENOSPC, "No space left on device")

    async def noop() -> None:
        return None

    async def scenario() -> None:
        writer = JournalWriter(journal, noop)
        await writer.put(runs(b"a", b"b"))
        with pytest.raises(OSError, match="No space"):
            await writer.flush()
        with pytest.raises(OSError, match="No space"):
            await writer.put(runs(b"c"))

    asyncio.run(scenario())
    assert journal.last_sequence == 0
    assert texts(journal) == []
    journal.close()


def test_put_waits_when_too_much_is_pending(tmp_path: Path) -> None:
    journal = SlowJournal(tmp_path / "journal")

    async def noop() -> None:
        return None

    async def scenario() -> None:
        writer = JournalWriter(journal, noop, max_pending_bytes=10)
        await writer.put(runs(b"x" * 4))
        await asyncio.sleep(0)
        blocked = asyncio.create_task(writer.put(runs(b"y" * 20)))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # the reader (and so the script) is held back
        journal.gate.set()
        async with asyncio.timeout(10):
            await blocked
        await writer.flush()

    asyncio.run(scenario())
    assert texts(journal) == [b"xxxx", b"y" * 20]
    journal.close()
