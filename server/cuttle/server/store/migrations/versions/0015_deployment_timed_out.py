"""A deployment whose time limit ran out is recorded timed_out, not cancelled.

Nothing references `deployments`, so rebuilding it on SQLite (to change its check constraint)
cascades into no other table.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "state IN ('queued', 'running', 'success', 'failed', 'cancelled')"
_NEW = "state IN ('queued', 'running', 'success', 'failed', 'cancelled', 'timed_out')"


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("deployments") as batch:
        batch.drop_constraint(op.f("ck_deployments_state"), type_="check")
        batch.create_check_constraint(op.f("ck_deployments_state"), _NEW)


def downgrade() -> None:
    """Revert this revision; timed-out deployments read as cancelled again."""
    op.execute("UPDATE deployments SET state = 'cancelled' WHERE state = 'timed_out'")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_constraint(op.f("ck_deployments_state"), type_="check")
        batch.create_check_constraint(op.f("ck_deployments_state"), _OLD)
