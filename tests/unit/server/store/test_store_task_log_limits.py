"""A task's log is bounded: past the limit lines are counted, not stored, and the log says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.scripts import LogRun
from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.store import task_log, tasks
from cuttle.server.store.errors import ServerDiskFull
from cuttle.server.store.records import StoredLine, TaskRecord
from cuttle.server.store.task_log import LogLimits

MACHINES = ("Web-1", "Web-2")
NOTE_SOURCE = 3  # lines the server writes itself


def _ticket(task: TaskRecord, machine: str) -> str:
    return next(t.ticket for t in task.targets if t.machine_name == machine)


def run(first: int, last: int) -> LogRun:
    """The lines first..last, each "line NNNN" (9 bytes with its newline)."""
    text = b"\n".join(b"line %04d" % s for s in range(first, last + 1))
    return LogRun(first, 1_000 + first, 1, 1, text, last - first + 1)


@pytest.fixture
def task(sessions: sessionmaker[Session]) -> TaskRecord:
    with sessions.begin() as session:
        return tasks.create_script_task(
            session,
            description="limit test",
            spec=ScriptTaskSpec(syntax="bash", body="yes"),
            machine_names=MACHINES,
        )


def read_all(engine: Engine, task_id: str) -> list[StoredLine]:
    with engine.connect() as connection:
        return task_log.read_lines(connection, task_id, limit=10_000)


def test_lines_past_the_limit_are_counted_not_stored(
    engine: Engine, sessions: sessionmaker[Session], task: TaskRecord
) -> None:
    # Room for 25 lines of 10 bytes ("line NNNN\n") and a part of the 26th: it is dropped whole.
    limits = LogLimits(max_bytes=255)
    ticket = _ticket(task, "Web-1")
    with engine.begin() as connection:
        assert task_log.append_runs(connection, ticket, [run(1, 10)], limits) == 10
        assert task_log.append_runs(connection, ticket, [run(11, 40)], limits) == 15
        assert task_log.append_runs(connection, ticket, [run(41, 50)], limits) == 0
    with engine.begin() as connection:
        # A replay of dropped lines is neither stored nor counted twice.
        assert task_log.append_runs(connection, ticket, [run(30, 50)], limits) == 0
    with engine.begin() as connection:
        task_log.note_dropped(connection, task.id, limits.max_bytes)

    stored = read_all(engine, task.id)
    script = [line.text for line in stored if line.source != NOTE_SOURCE]
    assert script == [b"line %04d" % s for s in range(1, 26)]
    notes = [line.text.decode() for line in stored if line.source == NOTE_SOURCE]
    assert len(notes) == 2, notes
    assert "reached its limit of 255 bytes" in notes[0]
    assert "25 lines (250 bytes) of output were dropped" in notes[1]
    # Where each note is: the first after the last stored line, the count at the end.
    assert stored[25].source == NOTE_SOURCE
    assert stored[-1].source == NOTE_SOURCE
    assert [line.position for line in stored] == list(range(1, len(stored) + 1))
    with sessions.begin() as session:
        # Exactly once: the dropped lines count as taken, so the agent is not asked again.
        assert tasks.get_run(session, ticket).last_sequence == 50
        assert tasks.get(session, task.id).log_count == len(stored)


def test_the_limit_is_per_task_across_machines(engine: Engine, task: TaskRecord) -> None:
    limits = LogLimits(max_bytes=100)
    with engine.begin() as connection:
        assert task_log.append_runs(connection, _ticket(task, "Web-1"), [run(1, 6)], limits) == 6
        assert task_log.append_runs(connection, _ticket(task, "Web-2"), [run(1, 6)], limits) == 4
        task_log.note_dropped(connection, task.id, limits.max_bytes)
    notes = [line.text.decode() for line in read_all(engine, task.id) if line.source == 3]
    assert "2 lines (20 bytes) of output were dropped" in notes[-1]


def test_a_task_within_its_limit_gets_no_note(engine: Engine, task: TaskRecord) -> None:
    with engine.begin() as connection:
        task_log.append_runs(connection, _ticket(task, "Web-1"), [run(1, 10)], LogLimits())
        task_log.note_dropped(connection, task.id, LogLimits().max_bytes)
    assert all(line.source != NOTE_SOURCE for line in read_all(engine, task.id))


def test_below_the_free_space_floor_output_is_refused(
    engine: Engine, sessions: sessionmaker[Session], task: TaskRecord, tmp_path: Path
) -> None:
    # No disk has an exabyte free: the floor is always under water here.
    limits = LogLimits(min_free_bytes=2**60, data_dir=tmp_path)
    ticket = _ticket(task, "Web-1")
    with pytest.raises(ServerDiskFull, match="below the floor"), engine.begin() as connection:
        task_log.append_runs(connection, ticket, [run(1, 5)], limits)
    with sessions.begin() as session:
        # Nothing was taken: the agent keeps the lines in its journal.
        assert tasks.get_run(session, ticket).last_sequence == 0
    assert read_all(engine, task.id) == []
