"""Bounded task logs: each task counts the bytes it stored and the lines and bytes it dropped.

Existing tasks start from zero: their logs were stored without a limit, and nothing they hold
is dropped after the fact.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("log_bytes", "log_dropped_lines", "log_dropped_bytes")


def upgrade() -> None:
    """Apply this revision."""
    # Plain ALTERs, not batch mode: SQLite adds (3.35+ drops) such a column in place, while a
    # batch copy of `tasks` would drop the old table, and that cascades into its log chunks.
    for name in _COLUMNS:
        op.add_column("tasks", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Revert this revision; the counts are forgotten (the stored lines stay)."""
    for name in reversed(_COLUMNS):
        op.drop_column("tasks", name)
