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
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from cuttle.protocol.logruns import head_lines
from cuttle.server.domain.scripts import LogChunk, LogRun
from cuttle.server.store import log_packing
from cuttle.server.store.errors import InvalidArgument, NotFound
from cuttle.server.store.models import Base
from cuttle.server.store.records import StoredLine

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
    select(_tasks.c.id, _tasks.c.log_count, _runs.c.last_sequence, _runs.c.machine_name)
    .select_from(_tasks.join(_runs, _runs.c.task_id == _tasks.c.id))
    .where(_runs.c.ticket == bindparam("p_ticket"))
    .with_for_update(of=_tasks)
)
_INSERT = insert(_log)
_SET_LOG_COUNT = (
    update(_tasks)
    .where(_tasks.c.id == bindparam("p_task_id"))
    .values(log_count=bindparam("p_log_count"))
)
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


def append_runs(conn: Connection | Session, ticket: str, runs: Sequence[LogRun]) -> int:
    """Store the lines of these runs not stored yet for this script run; return how many."""
    stored = append_chunk(conn, ticket, runs)
    return 0 if stored is None else stored.count


def append_chunk(
    conn: Connection | Session, ticket: str, runs: Sequence[LogRun]
) -> LogChunk | None:
    """Store the lines of these runs not stored yet for this script run; return what was stored.

    A run that is partly stored already (a replay after a reconnect) is trimmed to its new
    lines; repeats and runs out of order are tolerated (sorted, per run, not per line). What is
    returned is what followers may be handed once the transaction commits (None: nothing new).
    """
    connection = _connection(conn)
    current = connection.execute(_LOCK_AND_READ, {"p_ticket": ticket}).one_or_none()
    if current is None:
        raise NotFound("ticket", ticket)
    task_id, log_count, last_sequence, machine_name = (
        str(current[0]),
        int(current[1]),
        int(current[2]),
        str(current[3]),
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

    count = sum(run.count for run in fresh)
    first_position = log_count + 1
    last_position = log_count + count
    connection.execute(
        _INSERT,
        {
            "task_id": task_id,
            "first_position": first_position,
            "last_position": last_position,
            "ticket": ticket,
            "machine_name": machine_name,
            "first_sequence": fresh[0].sequence,
            "last_sequence": stored_to,
            "lines": log_packing.pack(fresh),
        },
    )
    connection.execute(_SET_LOG_COUNT, {"p_task_id": task_id, "p_log_count": last_position})
    connection.execute(_SET_LAST_SEQUENCE, {"p_ticket": ticket, "p_last_sequence": stored_to})
    return LogChunk(first_position, machine_name, tuple(fresh))


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
            chunk = LogChunk(int(first), str(machine), tuple(log_packing.unpack_runs(bytes(data))))
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
    """The chunk without its lines at or before after_position."""
    skip = after_position - chunk.first_position + 1
    if skip <= 0:
        return chunk
    runs: list[LogRun] = []
    for run in chunk.runs:
        if skip >= run.count:
            skip -= run.count
            continue
        if skip > 0:
            run = _drop_head(run, skip)
            skip = 0
        runs.append(run)
    return LogChunk(after_position + 1, chunk.machine_name, tuple(runs))


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
