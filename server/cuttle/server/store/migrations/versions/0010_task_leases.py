"""Task leases and server nodes: tasks are claimed from the database, not held in memory.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "server_nodes",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_ms", sa.BigInteger(), nullable=False),
        sa.Column("task_cap", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_nodes")),
    )
    # A plain nullable column: no table rebuild (tasks is referenced by every task table).
    op.add_column("tasks", sa.Column("lease_expires_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    # Not batch mode: rebuilding tasks on SQLite would cascade into every table under it.
    # SQLite 3.35+ and PostgreSQL both drop a column in place.
    op.execute("ALTER TABLE tasks DROP COLUMN lease_expires_ms")
    op.drop_table("server_nodes")
