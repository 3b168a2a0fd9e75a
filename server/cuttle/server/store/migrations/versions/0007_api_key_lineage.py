"""API key lineage: which key created each key, so revoking one revokes what it made.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision; existing keys have no recorded creator."""
    # Batch mode: SQLite can only add a foreign key by rebuilding the table.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("created_by_key_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            op.f("fk_api_keys_created_by_key_id_api_keys"),
            "api_keys",
            ["created_by_key_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index("ix_api_keys_created_by_key_id", ["created_by_key_id"])


def downgrade() -> None:
    """Revert this revision; the lineage is forgotten (revocations already made stay)."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_created_by_key_id")
        batch.drop_constraint(op.f("fk_api_keys_created_by_key_id_api_keys"), type_="foreignkey")
        batch.drop_column("created_by_key_id")
