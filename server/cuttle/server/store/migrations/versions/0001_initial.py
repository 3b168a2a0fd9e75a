"""Initial schema: machines, API keys, tasks, their targets, log lines and artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"], unique=False)

    op.create_table(
        "machines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_key", sa.String(length=200), nullable=False),
        sa.Column("comms_style", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=True),
        sa.Column("thumbprint", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("environments", sa.JSON(), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("health_message", sa.Text(), nullable=False),
        sa.Column("tentacle_version", sa.String(length=64), nullable=False),
        sa.Column("os", sa.String(length=200), nullable=False),
        sa.Column("free_disk_bytes", sa.BigInteger(), nullable=True),
        sa.Column("last_health_check_ms", sa.BigInteger(), nullable=True),
        sa.Column("registered_ms", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "comms_style IN ('listening', 'polling')", name=op.f("ck_machines_comms_style")
        ),
        sa.CheckConstraint(
            "health IN ('unknown', 'healthy', 'unavailable')", name=op.f("ck_machines_health")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machines")),
    )
    op.create_index("ix_machines_name_key", "machines", ["name_key"], unique=True)
    op.create_index("ix_machines_thumbprint", "machines", ["thumbprint"], unique=True)

    op.create_table(
        "tasks",
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
    op.create_index("ix_tasks_created_ms_id", "tasks", ["created_ms", "id"], unique=False)
    op.create_index("ix_tasks_state", "tasks", ["state"], unique=False)

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
            ["tasks.id"],
            name=op.f("fk_task_targets_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "machine_name", name=op.f("pk_task_targets")),
    )
    op.create_index("ix_task_targets_ticket", "task_targets", ["ticket"], unique=True)

    op.create_table(
        "artifact_blobs",
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
    op.create_table(
        "task_log",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("text", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id", "machine_name"],
            ["task_targets.task_id", "task_targets.machine_name"],
            name=op.f("fk_task_log_task_id_machine_name_task_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "position", name=op.f("pk_task_log")),
        sa.UniqueConstraint(
            "task_id",
            "machine_name",
            "sequence",
            name=op.f("uq_task_log_task_id_machine_name_sequence"),
        ),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("task_log")
    op.drop_table("artifact_blobs")
    op.drop_index("ix_task_targets_ticket", table_name="task_targets")

    op.drop_table("task_targets")
    op.drop_index("ix_tasks_state", table_name="tasks")
    op.drop_index("ix_tasks_created_ms_id", table_name="tasks")

    op.drop_table("tasks")
    op.drop_index("ix_machines_thumbprint", table_name="machines")
    op.drop_index("ix_machines_name_key", table_name="machines")

    op.drop_table("machines")
    op.drop_index("ix_api_keys_prefix", table_name="api_keys")
    op.drop_index("ix_api_keys_key_hash", table_name="api_keys")

    op.drop_table("api_keys")
