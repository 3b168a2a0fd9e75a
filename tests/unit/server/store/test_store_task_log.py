"""Task log: every journaled line stored exactly once, in dense positions, bytes unchanged.

Lines arrive in runs (consecutive lines sharing time, source and level), as Tentacles send them.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.scripts import LogRun, RunColumns
from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.store import log_packing, task_log, tasks
from cuttle.server.store.errors import InvalidArgument, NotFound
from cuttle.server.store.records import StoredLine, TaskRecord

MACHINES = ("Web-1", "Web-2", "Web-3", "Web-4")


def _ticket(task: TaskRecord, machine: str) -> str:
    """The ticket of the machine's (first) script run."""
    return next(t.ticket for t in task.targets if t.machine_name == machine)


def lines(sequences: Iterable[int], prefix: bytes = b"line") -> list[LogRun]:
    """One run per line."""
    return [
        LogRun(sequence=s, time_ms=1_000 + s, source=1, level=1, text=prefix + b" %d" % s)
        for s in sequences
    ]


def run(first: int, last: int, prefix: bytes = b"line") -> LogRun:
    """One run holding the lines first..last."""
    text = b"\n".join(prefix + b" %d" % s for s in range(first, last + 1))
    return LogRun(first, 1_000 + first, 1, 1, text, last - first + 1)


@pytest.fixture
def task(sessions: sessionmaker[Session]) -> TaskRecord:
    with sessions.begin() as session:
        return tasks.create_script_task(
            session,
            description="log test",
            spec=ScriptTaskSpec(syntax="bash", body="yes | head"),
            machine_names=MACHINES,
        )


def read_all(engine: Engine, task_id: str, machine_name: str | None = None) -> list[StoredLine]:
    result: list[StoredLine] = []
    with engine.connect() as connection:
        while True:
            after = result[-1].position if result else 0
            batch = task_log.read_lines(
                connection, task_id, after_position=after, limit=1000, machine_name=machine_name
            )
            if not batch:
                return result
            result.extend(batch)


def assert_exactly_once(stored: list[StoredLine], expected: dict[str, range]) -> None:
    assert [line.position for line in stored] == list(range(1, len(stored) + 1))
    for machine, sequences in expected.items():
        mine = [line.sequence for line in stored if line.machine_name == machine]
        assert mine == list(sequences), machine


def test_append_then_read(engine: Engine, task: TaskRecord) -> None:
    with engine.begin() as connection:
        assert task_log.append_runs(connection, _ticket(task, "Web-1"), lines(range(1, 4))) == 3
        assert task_log.append_runs(connection, _ticket(task, "Web-1"), [run(4, 6)]) == 3
    assert [(s.position, s.sequence, s.text, s.time_ms) for s in read_all(engine, task.id)] == [
        (1, 1, b"line 1", 1001),
        (2, 2, b"line 2", 1002),
        (3, 3, b"line 3", 1003),
        (4, 4, b"line 4", 1004),
        (5, 5, b"line 5", 1004),
        (6, 6, b"line 6", 1004),
    ]


def test_appending_the_same_batch_twice_stores_it_once(
    engine: Engine, sessions: sessionmaker[Session], task: TaskRecord
) -> None:
    batch = [*lines(range(1, 51)), run(51, 100)]
    with engine.begin() as connection:
        first = task_log.append_runs(connection, _ticket(task, "Web-1"), batch)
    with engine.begin() as connection:
        second = task_log.append_runs(connection, _ticket(task, "Web-1"), batch)
    assert first == 100
    assert second == 0
    assert_exactly_once(read_all(engine, task.id), {"Web-1": range(1, 101)})
    with sessions.begin() as session:
        assert tasks.get_run(session, _ticket(task, "Web-1")).last_sequence == 100
        assert tasks.get(session, task.id).log_count == 100


def test_overlapping_batches_store_only_what_is_new(engine: Engine, task: TaskRecord) -> None:
    with engine.begin() as connection:
        task_log.append_runs(connection, _ticket(task, "Web-1"), lines(range(1, 51)))
        task_log.append_runs(connection, _ticket(task, "Web-2"), lines(range(1, 11)))
    with engine.begin() as connection:
        # A replay after a reconnect: 41-50 again, then 51-80; out of order and repeated too.
        replay = lines(range(80, 40, -1)) + lines([60, 60])
        assert task_log.append_runs(connection, _ticket(task, "Web-1"), replay) == 30
        # A run that straddles what is stored keeps only its new lines, with their sequences.
        assert task_log.append_runs(connection, _ticket(task, "Web-1"), [run(71, 90)]) == 10
    stored = read_all(engine, task.id)
    web1 = [s for s in stored if s.machine_name == "Web-1" and s.sequence > 50]
    assert [s.sequence for s in web1] == list(range(51, 91))
    assert [s.position for s in web1] == list(range(61, 101))
    assert [s.text for s in web1[-10:]] == [b"line %d" % n for n in range(81, 91)]
    assert_exactly_once(stored, {"Web-1": range(1, 91), "Web-2": range(1, 11)})


def test_a_rolled_back_append_leaves_no_trace(
    engine: Engine, sessions: sessionmaker[Session], task: TaskRecord
) -> None:
    with engine.connect() as connection:
        transaction = connection.begin()
        task_log.append_runs(connection, _ticket(task, "Web-1"), lines(range(1, 11)))
        transaction.rollback()
    with sessions.begin() as session:
        # The caller's session transaction is the one the lines join.
        assert task_log.append_runs(session, _ticket(task, "Web-1"), lines(range(1, 11))) == 10
        assert tasks.get_run(session, _ticket(task, "Web-1")).last_sequence == 10
    assert_exactly_once(read_all(engine, task.id), {"Web-1": range(1, 11)})


def test_bytes_that_are_not_utf8_round_trip(engine: Engine, task: TaskRecord) -> None:
    texts = [
        b"\xff\xfe\x00binary",
        b"caf\xe9",
        "café ✓".encode(),
        b"",
        b"\x00" * 3,
        b"\x80" * 10_000,
    ]
    # One-line runs, and the same texts again as one run: newlines only separate lines.
    batch = [
        LogRun(sequence=n, time_ms=0, source=2, level=5, text=t) for n, t in enumerate(texts, 1)
    ]
    batch.append(LogRun(len(texts) + 1, 0, 2, 5, b"\n".join(texts), len(texts)))
    with engine.begin() as connection:
        task_log.append_runs(connection, _ticket(task, "Web-1"), batch)
    stored = read_all(engine, task.id)
    assert [s.text for s in stored] == texts + texts
    assert {(s.source, s.level) for s in stored} == {(2, 5)}


def test_ten_thousand_lines_in_batches(engine: Engine, task: TaskRecord) -> None:
    for start in range(1, 10_001, 100):
        with engine.begin() as connection:
            stored = task_log.append_runs(
                connection, _ticket(task, "Web-1"), [run(start, start + 99)]
            )
        assert stored == 100
    stored_lines = read_all(engine, task.id)
    assert len(stored_lines) == 10_000
    assert_exactly_once(stored_lines, {"Web-1": range(1, 10_001)})


def test_concurrent_writers_of_one_task_get_dense_positions(
    engine: Engine, task: TaskRecord
) -> None:
    def stream(machine: str) -> None:
        # Each batch is sent twice, the way a retry after a lost reply would.
        for start in range(1, 201, 20):
            for _ in range(2):
                with engine.begin() as connection:
                    task_log.append_runs(
                        connection, _ticket(task, machine), lines(range(start, start + 20))
                    )

    with ThreadPoolExecutor(max_workers=len(MACHINES)) as pool:
        for future in [pool.submit(stream, machine) for machine in MACHINES]:
            future.result(timeout=60)
    stored = read_all(engine, task.id)
    assert len(stored) == 200 * len(MACHINES)
    assert_exactly_once(stored, {machine: range(1, 201) for machine in MACHINES})


def test_read_one_machine_and_with_limits(engine: Engine, task: TaskRecord) -> None:
    with engine.begin() as connection:
        task_log.append_runs(connection, _ticket(task, "Web-1"), lines(range(1, 6)))
        task_log.append_runs(connection, _ticket(task, "Web-2"), lines(range(1, 6)))
        task_log.append_runs(connection, _ticket(task, "Web-1"), lines(range(6, 9)))
    web2 = read_all(engine, task.id, machine_name="Web-2")
    assert [(s.position, s.sequence) for s in web2] == [(n + 5, n) for n in range(1, 6)]
    with engine.connect() as connection:
        page = task_log.read_lines(connection, task.id, after_position=3, limit=2)
        with pytest.raises(InvalidArgument):
            task_log.read_lines(connection, task.id, limit=0)
    assert [s.position for s in page] == [4, 5]


def test_unknown_ticket_is_not_found(engine: Engine, task: TaskRecord) -> None:
    with engine.begin() as connection, pytest.raises(NotFound, match="ticket 'nope'"):
        task_log.append_runs(connection, "nope", lines([1]))


def test_empty_batch_stores_nothing(engine: Engine, task: TaskRecord) -> None:
    with engine.begin() as connection:
        assert task_log.append_runs(connection, _ticket(task, "Web-1"), []) == 0
    assert read_all(engine, task.id) == []


def _store_chunks(engine: Engine, task: TaskRecord, chunks: int, lines_each: int) -> None:
    with engine.begin() as connection:
        for index in range(chunks):
            machine = MACHINES[index % 2]
            first = index // 2 * lines_each + 1
            task_log.append_runs(
                connection, _ticket(task, machine), [run(first, first + lines_each - 1)]
            )


def test_read_chunks_from_any_position_cuts_the_first_chunk(
    engine: Engine, task: TaskRecord
) -> None:
    _store_chunks(engine, task, chunks=4, lines_each=10)
    expected = read_all(engine, task.id)
    for after in (0, 1, 9, 10, 15, 39, 40):
        with engine.connect() as connection:
            chunks = task_log.read_chunks(connection, task.id, after_position=after)
        got = [
            (position, chunk.machine_name, text)
            for chunk in chunks
            for position, text in enumerate(
                b"\n".join(r.text for r in chunk.runs).split(b"\n"), start=chunk.first_position
            )
        ]
        want = [(s.position, s.machine_name, s.text) for s in expected if s.position > after]
        assert got == want, after


def test_read_chunks_cuts_a_chunk_of_many_runs_at_any_line(
    engine: Engine, task: TaskRecord
) -> None:
    # One chunk of runs of 1, 3 and 5 lines (one empty line among them): every cut gives the
    # lines after it, each run's sequence, time and source kept.
    runs = [
        LogRun(1, 100, 1, 1, b"a", 1),
        LogRun(2, 200, 2, 1, b"b\n\nd", 3),
        LogRun(5, 300, 1, 2, b"e\nf\ng\nh\ni", 5),
    ]
    with engine.begin() as connection:
        task_log.append_runs(connection, _ticket(task, "Web-1"), runs)
    every = [
        (run.sequence + index, run.time_ms, run.source, text)
        for run in runs
        for index, text in enumerate(run.text.split(b"\n"))
    ]
    for after in range(10):
        with engine.connect() as connection:
            (chunk,) = task_log.read_chunks(connection, task.id, after_position=after) or [
                task_log.skip_to(task_log.read_chunks(connection, task.id)[0], after)
            ]
        got = [
            (run.sequence + index, run.time_ms, run.source, text)
            for run in chunk.runs
            for index, text in enumerate(run.text.split(b"\n"))
        ]
        assert chunk.first_position == after + 1
        assert chunk.count == len(every) - after
        assert got == every[after:], after


def test_reading_a_log_unpacks_each_chunk_once(
    engine: Engine, task: TaskRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_chunks(engine, task, chunks=60, lines_each=500)
    unpacked: list[int] = []
    original = log_packing.unpack_columns

    def counting(data: bytes) -> RunColumns:
        unpacked.append(len(data))
        return original(data)

    monkeypatch.setattr(log_packing, "unpack_columns", counting)
    after, total = 0, 0
    with engine.connect() as connection:
        while chunks := task_log.read_chunks(
            connection, task.id, after_position=after, max_bytes=64 * 1024
        ):
            after = chunks[-1].last_position
            total += sum(chunk.count for chunk in chunks)
    assert total == 60 * 500
    # Several reads of 64 KiB, yet every chunk went through unpacking exactly once.
    assert len(unpacked) == 60


def test_read_chunks_seeks_with_the_index(
    engine: Engine, task: TaskRecord, engine_dialect: str
) -> None:
    if engine_dialect != "sqlite":
        pytest.skip("the plan of a small table on PostgreSQL says nothing about large ones")
    _store_chunks(engine, task, chunks=4, lines_each=10)
    with engine.connect() as connection:
        compiled = task_log._READ.compile(connection)  # noqa: SLF001 - the very statement
        plan = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled), (task.id, 15)
        ).all()
    details = " ".join(str(row[-1]) for row in plan)
    assert "ix_task_log_chunks_task_id_last_position" in details, details
    assert "SCAN" not in details.replace("SCAN USING INDEX", ""), details
