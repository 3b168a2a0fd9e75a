"""Task log lines: every line a Tentacle journaled is stored exactly once, in a stable order.

This is the hot path (a busy deployment streams thousands of lines a second), so it uses
prebuilt Core statements, and a batch of lines is one row (a chunk, see log_packing.py) that
holds the batch's runs as the Tentacle sent them: the per-row cost of an insert and any
per-line Python work, not the bytes, are what limited how many lines a second a server could
store.

Exactly once: a Tentacle numbers the lines of a script run (its journal sequence, per ticket) and
streams them in order; script_runs.last_sequence says how far we have stored. A batch is trimmed
against it and last_sequence is advanced in the same transaction as the insert, so a batch
replayed after a crash or a reconnect stores nothing twice, and (ticket, first_sequence) is
unique in the table as a last line of defence.

Order: positions number all of a task's lines 1, 2, 3, ... across its machines. They are
allocated from tasks.log_count under that row's lock, held until commit, so a writer that got
lower positions has always committed before one with higher positions can: a reader following
the log with after_position never skips a line that commits later.

Bounds: a task's log holds at most LogLimits.max_bytes of script output. Past it, lines are
counted on the task row, not stored anywhere (as GitLab CI does with a job log): the log gets
one line saying the limit was reached where it was, and one with the counts when the task ends
(note_dropped). Dropped lines still advance last_sequence, so exactly-once holds for them too.
And output is refused (ServerDiskFull) while the data directory has less free space than the
floor, so a flood ends its task with the reason instead of filling the server's disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from cuttle.protocol.logruns import head_lines
from cuttle.server.domain.scripts import LogChunk, LogRun, RunColumns
from cuttle.server.store import log_packing
from cuttle.server.store.errors import InvalidArgument, NotFound, ServerDiskFull
from cuttle.server.store.models import Base
from cuttle.server.store.records import StoredLine, now_ms

MAX_READ = 10_000
# Bytes of log text one read_chunks call returns (about; it stops after the chunk that reaches
# it): enough for a few 256 KiB messages, little enough to hold for every follower.
READ_BYTES = 4 * 1024 * 1024

_tasks: Table = Base.metadata.tables["tasks"]
_runs: Table = Base.metadata.tables["script_runs"]
_log: Table = Base.metadata.tables["task_log_chunks"]

# Lock order is the task row, then the run row (see tasks.py). FOR UPDATE OF tasks makes
# concurrent writers of one task take turns on PostgreSQL; SQLite's BEGIN IMMEDIATE already has.
_LOCK_AND_READ = (
    select(
        _tasks.c.id,
        _tasks.c.log_count,
        _runs.c.last_sequence,
        _runs.c.machine_name,
        _tasks.c.log_bytes,
        _tasks.c.log_dropped_lines,
    )
    .select_from(_tasks.join(_runs, _runs.c.task_id == _tasks.c.id))
    .where(_runs.c.ticket == bindparam("p_ticket"))
    .with_for_update(of=_tasks)
)
_INSERT = insert(_log)
_SET_LOG_COUNT = (
    update(_tasks)
    .where(_tasks.c.id == bindparam("p_task_id"))
    .values(log_count=bindparam("p_log_count"), log_bytes=bindparam("p_log_bytes"))
)
# A line the server writes itself takes a position but is not script output: it does not count
# against the log's size limit, so log_bytes stays as it is.
_SET_SERVER_LOG_COUNT = (
    update(_tasks)
    .where(_tasks.c.id == bindparam("p_task_id"))
    .values(log_count=bindparam("p_log_count"))
)
_COUNT_DROPPED = (
    update(_tasks)
    .where(_tasks.c.id == bindparam("p_task_id"))
    .values(
        log_dropped_lines=_tasks.c.log_dropped_lines + bindparam("p_lines"),
        log_dropped_bytes=_tasks.c.log_dropped_bytes + bindparam("p_bytes"),
    )
)
_LOCK_TASK = (
    select(
        _tasks.c.log_count,
        _tasks.c.log_dropped_lines,
        _tasks.c.log_dropped_bytes,
    )
    .where(_tasks.c.id == bindparam("p_task_id"))
    .with_for_update()
)
# Lines the server writes into a log itself are marked as not the script's: the Tentacle's
# source (LOG_SOURCE_TENTACLE), at warning level.
_NOTE_SOURCE = 3
_NOTE_LEVEL = 4
DEFAULT_MAX_BYTES = 256 * 1024**2
# Shown where a machine's name would be, for a line about the whole task, not one machine.
TASK_NOTE_SOURCE_NAME = "(task log)"


@dataclass(frozen=True)
class LogLimits:
    """How much of a task's output the store keeps, and how full the server's disk may get."""

    # Bytes of script output (each line with its newline) stored per task; the rest is counted.
    max_bytes: int = DEFAULT_MAX_BYTES
    # Below this much free space in data_dir, new output is refused (0 or no dir: no floor).
    min_free_bytes: int = 0
    data_dir: Path | None = None


UNLIMITED = LogLimits(max_bytes=2**62)


def run_bytes(run: LogRun) -> int:
    """The size of a run as the script wrote it: its lines, each with its newline."""
    return len(run.text) + 1 if run.count else 0


def _check_free_space(limits: LogLimits) -> None:
    if limits.min_free_bytes <= 0 or limits.data_dir is None:
        return
    try:
        stat = os.statvfs(limits.data_dir)
    except OSError:
        return  # no directory to measure (a remote database): the floor does not apply
    free = stat.f_bavail * stat.f_frsize
    if free < limits.min_free_bytes:
        raise ServerDiskFull(
            f"{_size(free)} free in {limits.data_dir}, below the floor of "
            f"{_size(limits.min_free_bytes)} (data_dir_min_free_bytes): new output is refused"
        )


def _size(count: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{count} bytes"


_SET_LAST_SEQUENCE = (
    update(_runs)
    .where(_runs.c.ticket == bindparam("p_ticket"))
    .values(last_sequence=bindparam("p_last_sequence"))
)
_READ_COLUMNS = (
    _log.c.first_position,
    _log.c.last_position,
    _log.c.machine_name,
    _log.c.lines,
)
_READ = (
    select(*_READ_COLUMNS)
    .where(_log.c.task_id == bindparam("p_task_id"), _log.c.last_position > bindparam("p_after"))
    .order_by(_log.c.last_position)
    .execution_options(stream_results=True, max_row_buffer=16)
)
_READ_MACHINE = (
    select(*_READ_COLUMNS)
    .where(
        _log.c.task_id == bindparam("p_task_id"),
        _log.c.machine_name == bindparam("p_machine_name"),
        _log.c.last_position > bindparam("p_after"),
    )
    .order_by(_log.c.last_position)
    .execution_options(stream_results=True, max_row_buffer=16)
)


def _connection(conn: Connection | Session) -> Connection:
    # A caller holding a Session shares its transaction: the session's connection is the one.
    return conn.connection() if isinstance(conn, Session) else conn


def append_runs(
    conn: Connection | Session,
    ticket: str,
    runs: Sequence[LogRun],
    limits: LogLimits = UNLIMITED,
) -> int:
    """Store the lines of these runs not stored yet for this script run; return how many."""
    stored = append_chunk(conn, ticket, runs, limits)
    return 0 if stored is None else stored.count


def append_chunk(
    conn: Connection | Session,
    ticket: str,
    runs: Sequence[LogRun],
    limits: LogLimits = UNLIMITED,
) -> LogChunk | None:
    """Store the lines of these runs not stored yet for this script run; return what was stored.

    A run that is partly stored already (a replay after a reconnect) is trimmed to its new
    lines; repeats and runs out of order are tolerated (sorted, per run, not per line). Lines
    past the task's limit are counted, not stored; below the free-space floor nothing is
    taken (ServerDiskFull) and the Tentacle keeps the lines in its journal. What is returned
    is what followers may be handed once the transaction commits (None: nothing new stored).
    """
    connection = _connection(conn)
    current = connection.execute(_LOCK_AND_READ, {"p_ticket": ticket}).one_or_none()
    if current is None:
        raise NotFound("ticket", ticket)
    task_id, log_count, last_sequence, machine_name, log_bytes, dropped_before = (
        str(current[0]),
        int(current[1]),
        int(current[2]),
        str(current[3]),
        int(current[4]),
        int(current[5]),
    )

    fresh: list[LogRun] = []
    stored_to = last_sequence
    for run in sorted(runs, key=attrgetter("sequence")):
        if run.last_sequence <= stored_to:
            # Already stored, or a repeat within this batch: the first copy is the one we keep.
            continue
        if run.sequence <= stored_to:
            run = _drop_head(run, stored_to - run.sequence + 1)
        fresh.append(run)
        stored_to = run.last_sequence
    if not fresh:
        return None
    _check_free_space(limits)

    kept, dropped = _within(fresh, limits.max_bytes - log_bytes)
    count = sum(run.count for run in kept)
    position = log_count
    if kept:
        connection.execute(
            _INSERT,
            {
                "task_id": task_id,
                "first_position": position + 1,
                "last_position": position + count,
                "ticket": ticket,
                "machine_name": machine_name,
                "first_sequence": kept[0].sequence,
                "last_sequence": kept[-1].last_sequence,
                "lines": log_packing.pack(kept),
            },
        )
        position += count
    if dropped:
        if not dropped_before:
            # The first line this task loses: say so where it happens.
            position = _write_note(
                connection,
                task_id,
                position,
                machine_name,
                dropped[0],
                f"The task log reached its limit of {_size(limits.max_bytes)}: further output "
                f"is counted, not stored",
            )
        connection.execute(
            _COUNT_DROPPED,
            {
                "p_task_id": task_id,
                "p_lines": sum(run.count for run in dropped),
                "p_bytes": sum(run_bytes(run) for run in dropped),
            },
        )
    connection.execute(
        _SET_LOG_COUNT,
        {
            "p_task_id": task_id,
            "p_log_count": position,
            "p_log_bytes": log_bytes + sum(run_bytes(run) for run in kept),
        },
    )
    # Dropped lines count as stored here: a replay must not offer them again.
    connection.execute(_SET_LAST_SEQUENCE, {"p_ticket": ticket, "p_last_sequence": stored_to})
    return LogChunk.of_runs(log_count + 1, machine_name, kept) if kept else None


def _within(runs: list[LogRun], room: int) -> tuple[list[LogRun], list[LogRun]]:
    """Split runs into those that fit in room bytes and those that do not (by whole lines)."""
    kept: list[LogRun] = []
    for index, run in enumerate(runs):
        size = run_bytes(run)
        if size <= room:
            kept.append(run)
            room -= size
            continue
        # The run that crosses the limit: keep the lines that fit, one scan of this run only.
        lines = 0
        end = -1
        while lines < run.count:
            nxt = run.text.find(b"\n", end + 1)
            line_end = len(run.text) if nxt < 0 else nxt
            if line_end + 1 > room:
                break
            end = line_end
            lines += 1
        rest = runs[index + 1 :]
        if lines == 0:
            return kept, [run, *rest]
        head, tail = run.text[:end], run.text[end + 1 :]
        kept.append(LogRun(run.sequence, run.time_ms, run.source, run.level, head, lines))
        left = LogRun(
            run.sequence + lines, run.time_ms, run.source, run.level, tail, run.count - lines
        )
        return kept, [left, *rest]
    return kept, []


def _write_note(
    connection: Connection,
    task_id: str,
    position: int,
    machine_name: str,
    at: LogRun,
    text: str,
) -> int:
    """Store one line the server writes itself after position; returns the new position."""
    note = LogRun(at.sequence, at.time_ms, _NOTE_SOURCE, _NOTE_LEVEL, text.encode())
    connection.execute(
        _INSERT,
        {
            "task_id": task_id,
            "first_position": position + 1,
            "last_position": position + 1,
            # No ticket: not a line of the script's journal, so no replay can meet it.
            "ticket": None,
            "machine_name": machine_name,
            "first_sequence": note.sequence,
            "last_sequence": note.sequence,
            "lines": log_packing.pack([note]),
        },
    )
    return position + 1


def note_dropped(conn: Connection | Session, task_id: str, max_bytes: int) -> None:
    """At a task's end, say in its log how many lines and bytes the limit kept out (if any)."""
    connection = _connection(conn)
    current = connection.execute(_LOCK_TASK, {"p_task_id": task_id}).one_or_none()
    if current is None or not int(current[1]):
        return
    log_count, lines, size = int(current[0]), int(current[1]), int(current[2])
    at = LogRun(0, now_ms(), _NOTE_SOURCE, _NOTE_LEVEL, b"")
    position = _write_note(
        connection,
        task_id,
        log_count,
        TASK_NOTE_SOURCE_NAME,
        at,
        f"{lines} lines ({size} bytes) of output were dropped: the task log is limited to "
        f"{_size(max_bytes)} (task_log_limit_bytes)",
    )
    connection.execute(
        update(_tasks)
        .where(_tasks.c.id == task_id)
        .values(log_count=position)
        .execution_options(synchronize_session=False)
    )


def _drop_head(run: LogRun, lines: int) -> LogRun:
    """The run without its first `lines` lines."""
    _, rest = head_lines(run.text, lines)
    return LogRun(run.sequence + lines, run.time_ms, run.source, run.level, rest, run.count - lines)


def read_chunks(
    conn: Connection | Session,
    task_id: str,
    *,
    after_position: int = 0,
    max_bytes: int = READ_BYTES,
    machine_name: str | None = None,
) -> list[LogChunk]:
    """A task's stored lines after after_position, as runs, in position order.

    One query, seeking with the (task_id, last_position) index to the chunk that holds
    after_position + 1; each chunk is unpacked once, and the first is cut at that position.
    Stops after the chunk that reaches max_bytes of text (so at least one chunk comes back
    when there is any): the caller asks again after the last position it got.
    """
    connection = _connection(conn)
    params: dict[str, Any] = {"p_task_id": task_id, "p_after": after_position}
    if machine_name is None:
        statement = _READ
    else:
        statement = _READ_MACHINE
        params["p_machine_name"] = machine_name
    found: list[LogChunk] = []
    total = 0
    # Rows are fetched as they are used (a server-side cursor where the driver has one), so
    # a log of gigabytes costs max_bytes of memory here, not its size.
    result = connection.execute(statement, params)
    try:
        for first, _last, machine, data in result:
            chunk = LogChunk(int(first), str(machine), log_packing.unpack_columns(bytes(data)))
            if chunk.first_position <= after_position:
                chunk = skip_to(chunk, after_position)
            found.append(chunk)
            total += chunk.size
            if total >= max_bytes:
                break
    finally:
        result.close()
    return found


def skip_to(chunk: LogChunk, after_position: int) -> LogChunk:
    """The chunk without its lines at or before after_position.

    Whole runs are skipped by their lengths; only the run the position falls in is scanned.
    """
    skip = after_position - chunk.first_position + 1
    if skip <= 0:
        return chunk
    columns = chunk.columns
    index = 0
    offset = 0
    counts, lengths = columns.counts, columns.lengths
    while index < len(counts) and skip >= counts[index]:
        skip -= counts[index]
        offset += lengths[index] + 1
        index += 1
    if index == len(counts):
        return LogChunk(
            after_position + 1, chunk.machine_name, RunColumns(b"", (), (), (), (), (), ())
        )
    first_count, first_length, first_sequence = (
        counts[index],
        lengths[index],
        columns.sequences[index],
    )
    if skip:
        head, _ = head_lines(columns.text[offset : offset + first_length], skip)
        cut = len(head) + 1
        offset += cut
        first_count -= skip
        first_length -= cut
        first_sequence += skip
    cut_columns = RunColumns(
        text=columns.text[offset:],
        counts=[first_count, *counts[index + 1 :]],
        lengths=[first_length, *lengths[index + 1 :]],
        sequences=[first_sequence, *columns.sequences[index + 1 :]],
        times_ms=columns.times_ms[index:],
        sources=columns.sources[index:],
        levels=columns.levels[index:],
    )
    return LogChunk(after_position + 1, chunk.machine_name, cut_columns)


def read_lines(
    conn: Connection | Session,
    task_id: str,
    *,
    after_position: int = 0,
    limit: int = 1000,
    machine_name: str | None = None,
) -> list[StoredLine]:
    """Return up to limit of a task's lines after after_position, in position order.

    Line by line, for tests and small reads; followers and read-back use read_chunks.
    """
    if not 1 <= limit <= MAX_READ:
        raise InvalidArgument(f"limit {limit} is not between 1 and {MAX_READ}")
    found: list[StoredLine] = []
    after = after_position
    while len(found) < limit:
        chunks = read_chunks(conn, task_id, after_position=after, machine_name=machine_name)
        if not chunks:
            break
        for chunk in chunks:
            position = chunk.first_position
            for run in chunk.runs:
                for index, text in enumerate(run.text.split(b"\n")):
                    found.append(
                        StoredLine(
                            task_id=task_id,
                            position=position,
                            machine_name=chunk.machine_name,
                            sequence=run.sequence + index,
                            time_ms=run.time_ms,
                            source=run.source,
                            level=run.level,
                            text=text,
                        )
                    )
                    position += 1
                    if len(found) == limit:
                        return found
            after = chunk.last_position
    return found


_LOCK_LOG_COUNT = (
    select(_tasks.c.log_count).where(_tasks.c.id == bindparam("p_task_id")).with_for_update()
)
# LogSource.TENTACLE's neighbour on the server side: lines the engine writes itself carry the
# unspecified source and the info level, with no ticket and no sequence.
_SERVER_SOURCE = 0
_INFO = 1


def append_server_line(conn: Connection | Session, task_id: str, text: str) -> None:
    """Store one line the server writes into a task's log (why a step was skipped, ...)."""
    connection = _connection(conn)
    current = connection.execute(_LOCK_LOG_COUNT, {"p_task_id": task_id}).one_or_none()
    if current is None:
        raise NotFound("task", task_id)
    position = int(current[0]) + 1
    line = LogRun(0, now_ms(), _SERVER_SOURCE, _INFO, text.encode(), 1)
    connection.execute(
        _INSERT,
        {
            "task_id": task_id,
            "first_position": position,
            "last_position": position,
            "ticket": None,
            "machine_name": "",
            "first_sequence": 0,
            "last_sequence": 0,
            "lines": log_packing.pack([line]),
        },
    )
    connection.execute(_SET_SERVER_LOG_COUNT, {"p_task_id": task_id, "p_log_count": position})
