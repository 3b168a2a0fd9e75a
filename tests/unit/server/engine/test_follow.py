"""Following a task: no lost wakeup, the log from memory while it is written, the store to
catch up, every line exactly once and in order, a slow follower never holding up the writer."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.scripts import LogChunk, LogRun
from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.domain.task_states import TaskState
from cuttle.server.engine.follow import (
    Finished,
    FollowEvent,
    FollowSettings,
    LogChunks,
    Started,
    TaskFollower,
)
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.store import task_log, tasks
from cuttle.server.store.records import TaskRecord
from cuttle.server.store.transactions import Transactions

# A poll far longer than any test may take: whatever wakes a follower here is a notification.
NO_POLL = FollowSettings(poll_interval=3600.0)


def _task(sessions: sessionmaker[Session]) -> TaskRecord:
    with sessions.begin() as session:
        task = tasks.create_script_task(
            session,
            description="follow test",
            spec=ScriptTaskSpec(syntax="bash", body="seq 1 10"),
            machine_names=("web-01",),
        )
        return tasks.set_state(session, task.id, TaskState.RUNNING)


def _run(first: int, count: int) -> LogRun:
    text = b"\n".join(b"line %d" % n for n in range(first, first + count))
    return LogRun(first, 1_000, 1, 1, text, count)


async def _append(
    tx: Transactions, signals: TaskSignals, task: TaskRecord, first: int, count: int
) -> LogChunk:
    """Store lines as a script run does: commit, then hand them to followers."""
    ticket = task.targets[0].ticket
    stored = await tx.run(lambda s: task_log.append_chunk(s, ticket, [_run(first, count)]))
    assert stored is not None
    signals.notify(task.id, stored)
    return stored


def _texts(events: list[FollowEvent]) -> list[bytes]:
    return [
        line
        for event in events
        if isinstance(event, LogChunks)
        for chunk in event.chunks
        for run in chunk.runs
        for line in run.text.split(b"\n")
    ]


def test_a_change_before_the_wait_is_never_missed() -> None:
    async def run() -> None:
        signals = TaskSignals()
        with signals.subscribe("t1") as changes:
            seen = changes.version
            # The task changes after the follower looked and before it waits.
            signals.notify("t1")
            async with asyncio.timeout(1):
                assert await changes.wait_past(seen, 3600)
            assert not await changes.wait_past(changes.version, 0.01)
        assert signals.subscribers("t1") == 0

    asyncio.run(run())


def test_a_slow_follower_overflows_and_never_blocks_the_writer() -> None:
    signals = TaskSignals(buffer_bytes=100)
    with signals.subscribe("t1") as changes:
        for first in range(1, 1000, 10):
            # notify is synchronous and never waits for the follower.
            signals.notify("t1", LogChunk.of_runs(first, "web-01", (_run(first, 10),)))
        chunks, overflowed = changes.take()
        assert overflowed
        assert chunks == []
        assert changes.version == 100


def test_a_follower_gets_new_lines_from_memory_and_sees_the_end(
    sessions: sessionmaker[Session],
) -> None:
    task = _task(sessions)
    tx = Transactions(sessions)
    signals = TaskSignals()

    async def run() -> tuple[list[FollowEvent], int]:
        await _append(tx, signals, task, 1, 100)  # before the follower: from the store
        follower = TaskFollower(tx, signals, task.id, 0, NO_POLL)
        events: list[FollowEvent] = []
        async with asyncio.timeout(20):
            stream = follower.events(follow=True)
            events.append(await anext(stream))
            events.append(await anext(stream))
            reads_after_catch_up = follower.store_reads, follower.record_reads
            for first in range(101, 2101, 100):
                await _append(tx, signals, task, first, 100)
                events.append(await anext(stream))
            # Neither the log it was handed nor the task row (lines end nothing) was read.
            assert (follower.store_reads, follower.record_reads) == reads_after_catch_up
            await tx.run(lambda s: tasks.set_state(s, task.id, TaskState.SUCCESS))
            signals.notify(task.id)
            events.extend([event async for event in stream])
        return events, follower.store_reads

    try:
        events, _ = asyncio.run(run())
    finally:
        tx.close()
    assert isinstance(events[0], Started)
    assert isinstance(events[-1], Finished)
    assert _texts(events) == [b"line %d" % n for n in range(1, 2101)]


# Small reads make the follower read ahead while it sends (and throw away what memory passed).
@pytest.mark.parametrize("read_bytes", [4 * 1024 * 1024, 2_000])
def test_a_follower_that_fell_behind_catches_up_from_the_store(
    sessions: sessionmaker[Session], read_bytes: int
) -> None:
    task = _task(sessions)
    tx = Transactions(sessions)
    # Room for about two chunks: a follower that does not read overflows at once.
    signals = TaskSignals(buffer_bytes=2_000)

    async def run() -> list[FollowEvent]:
        settings = FollowSettings(poll_interval=3600.0, read_bytes=read_bytes)
        follower = TaskFollower(tx, signals, task.id, 0, settings)
        stream = follower.events(follow=True)
        async with asyncio.timeout(20):
            first = await anext(stream)
            for start in range(1, 5001, 100):
                await _append(tx, signals, task, start, 100)
            await tx.run(lambda s: tasks.set_state(s, task.id, TaskState.SUCCESS))
            signals.notify(task.id)
            return [first] + [event async for event in stream]

    try:
        events = asyncio.run(run())
    finally:
        tx.close()
    assert _texts(events) == [b"line %d" % n for n in range(1, 5001)]
    assert isinstance(events[-1], Finished)


@pytest.mark.parametrize(
    ("after", "read_bytes"), [(0, 4 << 20), (1, 300 << 10), (150, 4 << 20), (2999, 4 << 20)]
)
def test_read_back_comes_in_messages_of_at_least_256_kib(
    sessions: sessionmaker[Session], after: int, read_bytes: int
) -> None:
    task = _task(sessions)
    tx = Transactions(sessions)
    signals = TaskSignals()

    ticket = task.targets[0].ticket

    async def run() -> list[FollowEvent]:
        for first in range(1, 3001, 100):
            # 100 lines of ~1 KiB each per chunk.
            text = b"\n".join(b"%d " % n + b"x" * 1024 for n in range(first, first + 100))
            run_ = LogRun(first, 1_000, 1, 1, text, 100)
            await tx.run(lambda s, r=run_: task_log.append_chunk(s, ticket, [r]))
        await tx.run(lambda s: tasks.set_state(s, task.id, TaskState.SUCCESS))
        settings = FollowSettings(poll_interval=3600.0, read_bytes=read_bytes)
        follower = TaskFollower(tx, signals, task.id, after, settings)
        async with asyncio.timeout(20):
            return [event async for event in follower.events(follow=False)]

    try:
        events = asyncio.run(run())
    finally:
        tx.close()
    messages = [event for event in events if isinstance(event, LogChunks)]
    sizes = [sum(chunk.size for chunk in event.chunks) for event in messages]
    # With 300 KiB reads too (reading ahead while sending), each read fills whole messages.
    assert all(size >= 256 * 1024 for size in sizes[:-1]), sizes
    numbers = [int(line.split(b" ")[0]) for line in _texts(events)]
    assert numbers == list(range(after + 1, 3001))
    assert isinstance(events[-1], Finished)


def test_lines_removed_under_a_follower_do_not_keep_it_looking(
    sessions: sessionmaker[Session],
) -> None:
    task = _task(sessions)
    tx = Transactions(sessions)
    signals = TaskSignals()

    async def run() -> list[FollowEvent]:
        for first in (1, 11, 21):
            await _append(tx, signals, task, first, 10)
        with sessions.begin() as session:
            # As a retention policy would: the rows go, the task row still counts them.
            session.execute(
                text("DELETE FROM task_log_chunks WHERE task_id = :id AND first_position > 10"),
                {"id": task.id},
            )
            tasks.set_state(session, task.id, TaskState.SUCCESS)
        follower = TaskFollower(tx, signals, task.id, 0, NO_POLL)
        async with asyncio.timeout(20):
            return [event async for event in follower.events(follow=True)]

    try:
        events = asyncio.run(run())
    finally:
        tx.close()
    assert _texts(events) == [b"line %d" % n for n in range(1, 11)]
    assert isinstance(events[-1], Finished)


def test_a_burst_of_changes_costs_a_few_reads_of_the_tree_and_the_end_still_comes(
    sessions: sessionmaker[Session],
) -> None:
    task = _task(sessions)
    tx = Transactions(sessions)
    signals = TaskSignals()
    settings = FollowSettings(poll_interval=3600.0, record_interval=0.5)

    async def run() -> tuple[list[FollowEvent], int]:
        follower = TaskFollower(tx, signals, task.id, 0, settings)
        events: list[FollowEvent] = []
        stream = follower.events(follow=True)

        async def consume() -> None:
            async for event in stream:
                events.append(event)

        async with asyncio.timeout(20):
            consuming = asyncio.create_task(consume())
            # Twenty changes of the tree (states, ends), paced as a deployment makes them.
            for _ in range(20):
                signals.notify(task.id)
                await asyncio.sleep(0.01)
            await tx.run(lambda s: tasks.set_state(s, task.id, TaskState.SUCCESS))
            signals.notify(task.id)
            await consuming
        return events, follower.record_reads

    try:
        events, reads = asyncio.run(run())
    finally:
        tx.close()
    assert isinstance(events[-1], Finished)
    # The first read, at most one per half second of the burst, and the one that sees the end.
    assert reads <= 4, reads
