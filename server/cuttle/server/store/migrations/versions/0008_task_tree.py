"""Tasks become trees: task → step → action → machine nodes, each machine with its script runs.

Every existing task stays readable: a script task becomes one step ("Run script") with one
action and a machine node per former target; each target becomes that node's first script
run with the same ticket, state, sequence and results, and its log chunks are keyed by that
ticket. The tasks table gains the new states and kinds, a waiting reason, a warnings flag and
a final reason.

The tables are rebuilt rather than altered: SQLite can only change a check constraint by
copying the table, and dropping a table that others reference cascades into them. So the new
tables are filled first, the old ones dropped children first, and the new tasks table takes
the old name last (SQLite rewrites the references to it; PostgreSQL refers by identity).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the vocabulary in domain/task_states.py: a migration keeps meaning what it
# meant when it was written.
_TASK_KINDS = ("script", "deployment", "runbook")
_TASK_STATES = (
    "queued",
    "running",
    "waiting",
    "cancelling",
    "success",
    "failed",
    "cancelled",
    "timed_out",
)
_NODE_KINDS = ("step", "action", "machine")
_NODE_STATES = (
    "pending",
    "running",
    "success",
    "failed",
    "timed_out",
    "skipped",
    "excluded",
    "cancelled",
    "result_unknown",
)
_RUN_STATES = (
    "pending",
    "running",
    "complete",
    "cancelled",
    "timed_out",
    "result_unknown",
    "failed_to_start",
    "not_delivered",
)
_NODE_OF_RUN = {
    "pending": "pending",
    "running": "running",
    "cancelled": "cancelled",
    "timed_out": "timed_out",
    "result_unknown": "result_unknown",
    "failed_to_start": "failed",
    "not_delivered": "failed",
}
# The step and action above a migrated task's machines show how the task ended.
_CONTAINER_OF_TASK = {"success": "success", "failed": "failed", "cancelled": "cancelled"}
_BATCH = 1000


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    """Apply this revision."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Primary keys are indexes, whose names PostgreSQL wants unique in the schema: the
        # old tables give theirs up before the new ones take them.
        for table in ("tasks", "task_log_chunks", "artifact_blobs"):
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT pk_{table} TO pk_{table}_0007")
    op.create_table(
        "tasks_v7",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=True),
        sa.Column("finished_ms", sa.BigInteger(), nullable=True),
        sa.Column("owner_node", sa.String(length=200), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("log_count", sa.BigInteger(), nullable=False),
        sa.Column("waiting_reason", sa.Text(), nullable=False),
        sa.Column("has_warnings", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint(_one_of("kind", _TASK_KINDS), name=op.f("ck_tasks_kind")),
        sa.CheckConstraint(_one_of("state", _TASK_STATES), name=op.f("ck_tasks_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    bind.execute(
        sa.text(
            "INSERT INTO tasks_v7 (id, kind, description, state, spec, created_ms, started_ms,"
            " finished_ms, owner_node, cancel_requested, cancel_reason, log_count,"
            " waiting_reason, has_warnings, reason)"
            " SELECT id, kind, description, state, spec, created_ms, started_ms, finished_ms,"
            " owner_node, cancel_requested, cancel_reason, log_count, '', :false, ''"
            " FROM tasks"
        ),
        {"false": False},
    )
    nodes = op.create_table(
        "task_nodes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=True),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(_one_of("kind", _NODE_KINDS), name=op.f("ck_task_nodes_kind")),
        sa.CheckConstraint(_one_of("state", _NODE_STATES), name=op.f("ck_task_nodes_state")),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["task_nodes.id"],
            name=op.f("fk_task_nodes_parent_id_task_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks_v7.id"],
            name=op.f("fk_task_nodes_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_nodes")),
    )
    op.create_index("ix_task_nodes_task_id_position", "task_nodes", ["task_id", "position"])
    runs = op.create_table(
        "script_runs",
        sa.Column("ticket", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("output_variables", sa.JSON(), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("finished_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(_one_of("state", _RUN_STATES), name=op.f("ck_script_runs_state")),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["task_nodes.id"],
            name=op.f("fk_script_runs_node_id_task_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks_v7.id"],
            name=op.f("fk_script_runs_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ticket", name=op.f("pk_script_runs")),
        sa.UniqueConstraint("node_id", "attempt", name=op.f("uq_script_runs_node_id_attempt")),
    )
    op.create_index("ix_script_runs_task_id", "script_runs", ["task_id"])
    _copy_targets(bind, nodes, runs)

    op.create_table(
        "task_log_chunks_v7",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("first_position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("ticket", sa.String(length=64), nullable=True),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("first_sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks_v7.id"],
            name=op.f("fk_task_log_chunks_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ticket"],
            ["script_runs.ticket"],
            name=op.f("fk_task_log_chunks_ticket_script_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "first_position", name=op.f("pk_task_log_chunks")),
        sa.UniqueConstraint(
            "ticket", "first_sequence", name=op.f("uq_task_log_chunks_ticket_first_sequence")
        ),
    )
    bind.execute(
        sa.text(
            "INSERT INTO task_log_chunks_v7 (task_id, first_position, last_position, ticket,"
            " machine_name, first_sequence, last_sequence, lines)"
            " SELECT c.task_id, c.first_position, c.last_position, t.ticket, c.machine_name,"
            " c.first_sequence, c.last_sequence, c.lines"
            " FROM task_log_chunks c JOIN task_targets t"
            " ON t.task_id = c.task_id AND t.machine_name = c.machine_name"
        )
    )
    op.create_table(
        "artifact_blobs_v7",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks_v7.id"],
            name=op.f("fk_artifact_blobs_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "machine_name", "name", name=op.f("pk_artifact_blobs")),
    )
    bind.execute(
        sa.text(
            "INSERT INTO artifact_blobs_v7 (task_id, machine_name, name, content, sha256, size)"
            " SELECT task_id, machine_name, name, content, sha256, size FROM artifact_blobs"
        )
    )
    # Children first: each drop then cascades into nothing.
    op.drop_index("ix_task_log_chunks_task_id_last_position", table_name="task_log_chunks")
    op.drop_table("task_log_chunks")
    op.drop_table("artifact_blobs")
    op.drop_index("ix_task_targets_ticket", table_name="task_targets")
    op.drop_table("task_targets")
    op.drop_index("ix_tasks_state", table_name="tasks")
    op.drop_index("ix_tasks_created_ms_id", table_name="tasks")
    op.drop_table("tasks")
    op.rename_table("tasks_v7", "tasks")
    op.rename_table("task_log_chunks_v7", "task_log_chunks")
    op.rename_table("artifact_blobs_v7", "artifact_blobs")
    op.create_index("ix_tasks_created_ms_id", "tasks", ["created_ms", "id"])
    op.create_index("ix_tasks_state", "tasks", ["state"])
    op.create_index(
        "ix_task_log_chunks_task_id_last_position",
        "task_log_chunks",
        ["task_id", "last_position"],
    )


def _copy_targets(bind: sa.Connection, nodes: sa.Table, runs: sa.Table) -> None:
    """One step, one action and a machine node per former target; each target a first run."""
    targets = bind.execute(
        sa.text(
            "SELECT t.task_id, t.machine_name, t.ticket, t.state, t.exit_code, t.last_sequence,"
            " t.message, t.output_variables, t.artifacts, t.finished_ms, k.created_ms,"
            " k.started_ms, k.finished_ms AS task_finished_ms, k.state AS task_state"
            " FROM task_targets t JOIN tasks k ON k.id = t.task_id"
            " ORDER BY t.task_id, t.machine_name"
        )
    ).mappings()
    node_rows: list[dict[str, object]] = []
    run_rows: list[dict[str, object]] = []
    current: str | None = None
    action_id = ""
    position = 0
    for row in targets:
        if row["task_id"] != current:
            current = row["task_id"]
            step_id, action_id = uuid.uuid4().hex, uuid.uuid4().hex
            for node_id, parent, kind, at in (
                (step_id, None, "step", 0),
                (action_id, step_id, "action", 1),
            ):
                node_rows.append(
                    {
                        "id": node_id,
                        "task_id": current,
                        "parent_id": parent,
                        "kind": kind,
                        "position": at,
                        "name": "Run script",
                        "machine_name": None,
                        # The tree above a machine summarises it; the engine rewrites it on
                        # resume, and a finished task's state is the task's own.
                        "state": _CONTAINER_OF_TASK.get(str(row["task_state"]), "running"),
                        "reason": "",
                        "started_ms": row["started_ms"],
                        "ended_ms": row["task_finished_ms"],
                    }
                )
            position = 2
        state = str(row["state"])
        if state == "complete":
            node_state = "success" if row["exit_code"] == 0 else "failed"
        else:
            node_state = _NODE_OF_RUN[state]
        machine_id = uuid.uuid4().hex
        node_rows.append(
            {
                "id": machine_id,
                "task_id": current,
                "parent_id": action_id,
                "kind": "machine",
                "position": position,
                "name": row["machine_name"],
                "machine_name": row["machine_name"],
                "state": node_state,
                "reason": row["message"] if node_state != "success" else "",
                "started_ms": row["started_ms"],
                "ended_ms": row["finished_ms"],
            }
        )
        position += 1
        run_rows.append(
            {
                "ticket": row["ticket"],
                "task_id": current,
                "node_id": machine_id,
                "machine_name": row["machine_name"],
                "attempt": 1,
                "state": state,
                "exit_code": row["exit_code"],
                "last_sequence": row["last_sequence"],
                "message": row["message"],
                "output_variables": row["output_variables"],
                "artifacts": row["artifacts"],
                "created_ms": row["created_ms"],
                "finished_ms": row["finished_ms"],
            }
        )
        if len(run_rows) >= _BATCH:
            _flush(bind, nodes, runs, node_rows, run_rows)
    _flush(bind, nodes, runs, node_rows, run_rows)


def _flush(
    bind: sa.Connection,
    nodes: sa.Table,
    runs: sa.Table,
    node_rows: list[dict[str, object]],
    run_rows: list[dict[str, object]],
) -> None:
    # JSON columns arrive as text from a raw select on SQLite and as objects on PostgreSQL.
    for row in run_rows:
        for key in ("output_variables", "artifacts"):
            if isinstance(row[key], str):
                row[key] = json.loads(str(row[key]))
    if node_rows:
        bind.execute(nodes.insert(), node_rows)
    if run_rows:
        bind.execute(runs.insert(), run_rows)
    node_rows.clear()
    run_rows.clear()


def downgrade() -> None:
    """Back to one target per machine: each machine's latest run becomes its target.

    Earlier runs of a machine (retries) and their log lines are dropped, and tasks that are not
    ad-hoc scripts are removed with everything under them: revision 0007 cannot hold them.
    """
    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM tasks WHERE kind <> 'script'"))
    if bind.dialect.name == "postgresql":
        for table in ("tasks", "task_log_chunks", "artifact_blobs"):
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT pk_{table} TO pk_{table}_0008")
    op.create_table(
        "tasks_v6",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=True),
        sa.Column("finished_ms", sa.BigInteger(), nullable=True),
        sa.Column("owner_node", sa.String(length=200), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("log_count", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('script')", name=op.f("ck_tasks_kind")),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'success', 'failed', 'cancelled')",
            name=op.f("ck_tasks_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    bind.execute(
        sa.text(
            "INSERT INTO tasks_v6 (id, kind, description, state, spec, created_ms, started_ms,"
            " finished_ms, owner_node, cancel_requested, cancel_reason, log_count)"
            " SELECT id, kind, description,"
            " CASE state WHEN 'waiting' THEN 'running' WHEN 'cancelling' THEN 'running'"
            " WHEN 'timed_out' THEN 'failed' ELSE state END,"
            " spec, created_ms, started_ms, finished_ms, owner_node, cancel_requested,"
            " cancel_reason, log_count FROM tasks"
        )
    )
    op.create_table(
        "task_targets",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("ticket", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("output_variables", sa.JSON(), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("finished_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'complete', 'cancelled', 'timed_out',"
            " 'result_unknown', 'failed_to_start', 'not_delivered')",
            name=op.f("ck_task_targets_state"),
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks_v6.id"],
            name=op.f("fk_task_targets_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "machine_name", name=op.f("pk_task_targets")),
    )
    latest = (
        " FROM script_runs r WHERE r.attempt = (SELECT MAX(o.attempt) FROM script_runs o"
        " WHERE o.node_id = r.node_id)"
    )
    bind.execute(
        sa.text(
            "INSERT INTO task_targets (task_id, machine_name, ticket, state, exit_code,"
            " last_sequence, message, output_variables, artifacts, finished_ms)"
            " SELECT r.task_id, r.machine_name, r.ticket, r.state, r.exit_code, r.last_sequence,"
            " r.message, r.output_variables, r.artifacts, r.finished_ms" + latest
        )
    )
    op.create_table(
        "task_log_chunks_v6",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("first_position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("first_sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id", "machine_name"],
            ["task_targets.task_id", "task_targets.machine_name"],
            name=op.f("fk_task_log_chunks_task_id_machine_name_task_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "first_position", name=op.f("pk_task_log_chunks")),
        sa.UniqueConstraint(
            "task_id",
            "machine_name",
            "first_sequence",
            name=op.f("uq_task_log_chunks_task_id_machine_name_first_sequence"),
        ),
    )
    bind.execute(
        sa.text(
            "INSERT INTO task_log_chunks_v6 (task_id, first_position, last_position,"
            " machine_name, first_sequence, last_sequence, lines)"
            " SELECT c.task_id, c.first_position, c.last_position, c.machine_name,"
            " c.first_sequence, c.last_sequence, c.lines"
            " FROM task_log_chunks c JOIN task_targets t ON t.ticket = c.ticket"
        )
    )
    op.create_table(
        "artifact_blobs_v6",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id", "machine_name"],
            ["task_targets.task_id", "task_targets.machine_name"],
            name=op.f("fk_artifact_blobs_task_id_machine_name_task_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "machine_name", "name", name=op.f("pk_artifact_blobs")),
    )
    bind.execute(
        sa.text(
            "INSERT INTO artifact_blobs_v6 (task_id, machine_name, name, content, sha256, size)"
            " SELECT a.task_id, a.machine_name, a.name, a.content, a.sha256, a.size"
            " FROM artifact_blobs a JOIN task_targets t"
            " ON t.task_id = a.task_id AND t.machine_name = a.machine_name"
        )
    )
    op.drop_index("ix_task_log_chunks_task_id_last_position", table_name="task_log_chunks")
    op.drop_table("task_log_chunks")
    op.drop_table("artifact_blobs")
    op.drop_index("ix_script_runs_task_id", table_name="script_runs")
    op.drop_table("script_runs")
    op.drop_index("ix_task_nodes_task_id_position", table_name="task_nodes")
    op.drop_table("task_nodes")
    op.drop_index("ix_tasks_state", table_name="tasks")
    op.drop_index("ix_tasks_created_ms_id", table_name="tasks")
    op.drop_table("tasks")
    op.rename_table("tasks_v6", "tasks")
    op.rename_table("task_log_chunks_v6", "task_log_chunks")
    op.rename_table("artifact_blobs_v6", "artifact_blobs")
    op.create_index("ix_tasks_created_ms_id", "tasks", ["created_ms", "id"])
    op.create_index("ix_tasks_state", "tasks", ["state"])
    op.create_index("ix_task_targets_ticket", "task_targets", ["ticket"], unique=True)
    op.create_index(
        "ix_task_log_chunks_task_id_last_position",
        "task_log_chunks",
        ["task_id", "last_position"],
    )
