"""The package versions each runbook snapshot recorded, kept from delete, replace and prune.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "runbook_snapshot_packages",
        sa.Column("snapshot_id", sa.String(length=32), nullable=False),
        sa.Column("package_key", sa.String(length=200), nullable=False),
        sa.Column("version_key", sa.String(length=200), nullable=False),
        sa.Column("space_id", sa.String(length=32), nullable=False),
        sa.Column("package_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["runbook_snapshots.id"],
            name=op.f("fk_runbook_snapshot_packages_snapshot_id_runbook_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "snapshot_id", "package_key", "version_key", name=op.f("pk_runbook_snapshot_packages")
        ),
    )
    op.create_index(
        "ix_runbook_snapshot_packages_space_id_package_key_version_key",
        "runbook_snapshot_packages",
        ["space_id", "package_key", "version_key"],
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("runbook_snapshot_packages")
