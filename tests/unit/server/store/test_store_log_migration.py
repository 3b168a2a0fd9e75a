"""Migration 0003 carries every stored log line into chunks and back, bytes unchanged."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, text

from cuttle.server.store import task_log, tasks
from cuttle.server.store.database import _alembic_config, migrate, session_maker


def _downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), revision)


def test_lines_survive_the_move_to_chunks_and_back(engine: Engine) -> None:
    _downgrade(engine, "0002")
    with session_maker(engine).begin() as session:
        task = tasks.create_script_task(
            session, description="old", spec={"syntax": "bash", "body": ""}, machine_names=["a"]
        )
    old = [(1, 10, b"first"), (2, 11, b"\xff\x00not utf-8"), (3, 12, b"")]
    with engine.begin() as connection:
        for position, sequence, line in old:
            connection.execute(
                text(
                    "INSERT INTO task_log (task_id, position, machine_name, sequence, time_ms, "
                    "source, level, text) VALUES (:t, :p, 'a', :s, 5, 1, 2, :x)"
                ),
                {"t": task.id, "p": position, "s": sequence, "x": line},
            )
    migrate(engine)
    with engine.connect() as connection:
        stored = task_log.read_lines(connection, task.id)
    assert [(s.position, s.sequence, s.text) for s in stored] == old
    assert {(s.machine_name, s.time_ms, s.source, s.level) for s in stored} == {("a", 5, 1, 2)}

    _downgrade(engine, "0002")
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT position, sequence, text FROM task_log ORDER BY position")
        ).all()
    assert [(p, s, bytes(x)) for p, s, x in rows] == old
    migrate(engine)
