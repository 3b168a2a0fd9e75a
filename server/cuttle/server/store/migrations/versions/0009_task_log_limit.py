"""Bounded task logs: each task counts the bytes it stored and the lines and bytes it dropped.

Existing tasks start from zero: their logs were stored without a limit, and nothing they hold
is dropped after the fact.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("log_bytes", "log_dropped_lines", "log_dropped_bytes")


def upgrade() -> None:
    """Apply this revision."""
    # Batch mode: one table copy on SQLite for the three columns, plain ALTERs on PostgreSQL.
    with op.batch_alter_table("tasks") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Revert this revision; the counts are forgotten (the stored lines stay)."""
    with op.batch_alter_table("tasks") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
