"""Migrations 0003 and 0008 carry every stored log line and task forward and back, unchanged.

0003 moved lines into chunks; 0008 made tasks trees with script runs, the chunks keyed by run.
A task stored before either stays readable through today's store.
"""

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
    task_id, ticket = "0" * 32, "1" * 32
    with engine.begin() as connection:
        # As a server of revision 0002 stored an ad-hoc script task on machine "a".
        connection.execute(
            text(
                "INSERT INTO tasks (id, kind, description, state, spec, created_ms, started_ms,"
                " finished_ms, owner_node, cancel_requested, cancel_reason, log_count)"
                " VALUES (:t, 'script', 'old', 'failed', :spec, 1, 2, 3, NULL, :no, '', 3)"
            ),
            {"t": task_id, "spec": '{"syntax": "bash", "body": "exit 3"}', "no": False},
        )
        connection.execute(
            text(
                "INSERT INTO task_targets (task_id, machine_name, ticket, state, exit_code,"
                " last_sequence, message, output_variables, artifacts, finished_ms)"
                " VALUES (:t, 'a', :k, 'complete', 3, 12, 'exit 3', :outs, '[]', 3)"
            ),
            {
                "t": task_id,
                "k": ticket,
                "outs": '[{"name": "Out", "value": "v", "sensitive": false}]',
            },
        )
    old = [(1, 10, b"first"), (2, 11, b"\xff\x00not utf-8"), (3, 12, b"")]
    with engine.begin() as connection:
        for position, sequence, line in old:
            connection.execute(
                text(
                    "INSERT INTO task_log (task_id, position, machine_name, sequence, time_ms, "
                    "source, level, text) VALUES (:t, :p, 'a', :s, 5, 1, 2, :x)"
                ),
                {"t": task_id, "p": position, "s": sequence, "x": line},
            )
    migrate(engine)
    with engine.connect() as connection:
        stored = task_log.read_lines(connection, task_id)
    assert [(s.position, s.sequence, s.text) for s in stored] == old
    assert {(s.machine_name, s.time_ms, s.source, s.level) for s in stored} == {("a", 5, 1, 2)}
    with session_maker(engine).begin() as session:
        migrated = tasks.get(session, task_id)
    assert migrated.state == "failed"
    assert migrated.spec.body == "exit 3"
    assert [(n.kind, n.name, n.state) for n in migrated.nodes] == [
        ("step", "Run script", "failed"),
        ("action", "Run script", "failed"),
        ("machine", "a", "failed"),
    ]
    (target,) = migrated.targets
    assert (target.ticket, target.state, target.exit_code, target.last_sequence) == (
        ticket,
        "complete",
        3,
        12,
    )
    assert [(v.name, v.value) for v in target.output_variables] == [("Out", "v")]

    _downgrade(engine, "0002")
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT position, sequence, text FROM task_log ORDER BY position")
        ).all()
    assert [(p, s, bytes(x)) for p, s, x in rows] == old
    migrate(engine)
