"""Machines: tenants, tenant tags, tenanted mode and machine policy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("machines") as batch:
        # Server defaults fill the existing rows; the models give new rows their values.
        batch.add_column(sa.Column("tenants", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("tenant_tags", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(
            sa.Column(
                "tenanted_mode", sa.String(length=32), nullable=False, server_default="untenanted"
            )
        )
        batch.add_column(sa.Column("policy", sa.String(length=200), nullable=True))
    with op.batch_alter_table("machines") as batch:
        batch.alter_column("tenants", server_default=None)
        batch.alter_column("tenant_tags", server_default=None)
        batch.alter_column("tenanted_mode", server_default=None)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("policy")
        batch.drop_column("tenanted_mode")
        batch.drop_column("tenant_tags")
        batch.drop_column("tenants")
