"""Machines: the 'unreachable' health and when the current run of failed checks began.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HEALTHS = "health IN ('unknown', 'healthy', 'unreachable', 'unavailable')"
_OLD_HEALTHS = "health IN ('unknown', 'healthy', 'unavailable')"


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("unreachable_since_ms", sa.BigInteger(), nullable=True))
        batch.drop_constraint(op.f("ck_machines_health"), type_="check")
        batch.create_check_constraint(op.f("ck_machines_health"), sa.text(_HEALTHS))


def downgrade() -> None:
    """Revert this revision."""
    # The older schema knows no 'unreachable': those machines were counted unavailable then.
    op.execute("UPDATE machines SET health = 'unavailable' WHERE health = 'unreachable'")
    with op.batch_alter_table("machines") as batch:
        batch.drop_constraint(op.f("ck_machines_health"), type_="check")
        batch.create_check_constraint(op.f("ck_machines_health"), sa.text(_OLD_HEALTHS))
        batch.drop_column("unreachable_since_ms")
