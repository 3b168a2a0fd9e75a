"""Tasks record who started them (the audit trail's actor): existing tasks say nobody ("").

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    # A plain ADD COLUMN, not batch mode: rebuilding tasks on SQLite would cascade into every
    # table under it (see 0010).
    op.add_column(
        "tasks",
        sa.Column("started_by", sa.String(length=200), nullable=False, server_default=""),
    )


def downgrade() -> None:
    """Revert this revision; who started each task is forgotten."""
    op.drop_column("tasks", "started_by")
