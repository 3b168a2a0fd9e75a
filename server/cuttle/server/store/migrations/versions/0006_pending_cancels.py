"""Pending cancels: cancels for agents that were away, delivered when they are back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "pending_cancels",
        sa.Column("ticket", sa.String(length=64), nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_pending_cancels_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ticket", name=op.f("pk_pending_cancels")),
    )
    op.create_index("ix_pending_cancels_machine_id", "pending_cancels", ["machine_id"])
    op.create_index("ix_pending_cancels_next_attempt_ms", "pending_cancels", ["next_attempt_ms"])


def downgrade() -> None:
    """Revert this revision; cancels still pending are forgotten."""
    op.drop_index("ix_pending_cancels_next_attempt_ms", table_name="pending_cancels")
    op.drop_index("ix_pending_cancels_machine_id", table_name="pending_cancels")
    op.drop_table("pending_cancels")
